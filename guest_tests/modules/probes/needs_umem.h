/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prologue of the probes of the RDMA umem dma-buf API. Inlined into each probe
 * by harness/kernels/modules.py rather than included, so that the compiler
 * names the probe's own file in an error here and the error lands in that
 * feature's skip reason.
 */
#include <linux/kconfig.h>
#if !IS_ENABLED(CONFIG_INFINIBAND_USER_MEM)
#error "CONFIG_INFINIBAND_USER_MEM is off: ib_umem_* are stubs"
#endif
#include <rdma/ib_umem.h>
