// SPDX-License-Identifier: GPL-2.0
#include <linux/dma-buf.h>
bool hil_probe(struct dma_buf_attachment *a);
bool hil_probe(struct dma_buf_attachment *a) { return dma_buf_attach_revocable(a); }
