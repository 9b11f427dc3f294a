// SPDX-License-Identifier: GPL-2.0
#include "needs_umem.h"
void *hil_probe(void);
void *hil_probe(void) { return ib_umem_dmabuf_get_pinned_with_dma_device; }
