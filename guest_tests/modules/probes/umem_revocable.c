// SPDX-License-Identifier: GPL-2.0
#include "needs_umem.h"
/*
 * Addresses, never compared: -Werror=address would fail the probe on a kernel
 * that has them.
 */
void *hil_probe(int i);
void *hil_probe(int i)
{
	if (i == 0)
		return ib_umem_dmabuf_get_pinned_revocable_and_lock;
	if (i == 1)
		return ib_umem_dmabuf_set_revoke_locked;
	return ib_umem_dmabuf_revoke_unlock;
}
