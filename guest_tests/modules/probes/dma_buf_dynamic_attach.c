// SPDX-License-Identifier: GPL-2.0
#include <linux/kconfig.h>
#if !IS_ENABLED(CONFIG_DMA_SHARED_BUFFER)
#error "CONFIG_DMA_SHARED_BUFFER is off"
#endif
#include <linux/dma-buf.h>
#include <linux/dma-resv.h>
struct dma_buf_attachment *hil_probe(struct dma_buf *b, struct device *d);
struct dma_buf_attachment *hil_probe(struct dma_buf *b, struct device *d)
{
	dma_resv_lock(b->resv, NULL);
	dma_resv_unlock(b->resv);
	return dma_buf_dynamic_attach(b, d, NULL, NULL);
}
