/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers shared by the p2p-hil importer modules. Static inline on purpose:
 * one object linked into two modules makes kbuild warn.
 */
#ifndef HIL_COMMON_H
#define HIL_COMMON_H

#include <linux/device.h>
#include <linux/dma-mapping.h>
#include <linux/err.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>
#include <linux/uaccess.h>

#include "hil_importer_abi.h"

/* HIL_HAVE_* come from harness/kernels/modules.py's compile probes (-D flags). */
#if defined(HIL_HAVE_INVALIDATE_MAPPINGS) || defined(HIL_HAVE_MOVE_NOTIFY)
#define HIL_CAN_REVOKE 1
#else
#define HIL_CAN_REVOKE 0
#endif

/* The MODULE_IMPORT_NS() argument became a string literal in v6.13. */
#ifdef HIL_HAVE_IMPORT_NS_IDENT
#define HIL_IMPORT_DMA_BUF_NS() MODULE_IMPORT_NS(DMA_BUF)
#else
#define HIL_IMPORT_DMA_BUF_NS() MODULE_IMPORT_NS("DMA_BUF")
#endif

static inline u32 hil_features(void)
{
	u32 features = 0;

	if (HIL_CAN_REVOKE)
		features |= HIL_FEAT_REVOKE_CB;
#ifdef HIL_HAVE_INVALIDATE_MAPPINGS
	features |= HIL_FEAT_INVALIDATE_MAPPINGS;
#endif
#ifdef HIL_HAVE_MOVE_NOTIFY
	features |= HIL_FEAT_MOVE_NOTIFY;
#endif
#ifdef HIL_HAVE_ATTACH_REVOCABLE
	features |= HIL_FEAT_ATTACH_REVOCABLE;
#endif
#ifdef HIL_HAVE_UMEM_REVOCABLE
	features |= HIL_FEAT_UMEM_REVOCABLE;
#endif
#ifdef HIL_HAVE_UMEM_PINNED_DMA_DEV
	features |= HIL_FEAT_UMEM_PINNED_DMA_DEV;
#endif
	return features;
}

static inline long hil_get_version(void __user *uarg)
{
	struct hil_version v = {
		.abi_version = HIL_IMPORTER_ABI_VERSION,
		.features = hil_features(),
	};

	return copy_to_user(uarg, &v, sizeof(v)) ? -EFAULT : 0;
}

/* A reference to the PCI function, or ERR_PTR(-ENODEV). */
static inline struct pci_dev *hil_pci_dev_get(const struct hil_pci_function *f)
{
	struct pci_dev *pdev;

	if (f->pad)
		return ERR_PTR(-EINVAL);
	pdev = pci_get_domain_bus_and_slot(f->domain, f->bus, f->devfn);
	return pdev ? pdev : ERR_PTR(-ENODEV);
}

/*
 * The importing device's DMA mask, set the way its driver would. A PCI
 * function without a driver keeps the 32-bit default, which decides whether
 * a large IOVA fits; tests choose explicitly. Never touch a bound device.
 */
struct hil_dma_mask {
	bool changed;
	u64 set;
};

/*
 * One override per device, shared by the attachments that asked for the
 * same mask and undone when the last of them goes: restoring per attachment
 * put a 32-bit mask back under a live 64-bit mapping of another attachment
 * of the same device, whose next map then failed (an 8 GiB BAR above 4 GiB,
 * mapped directly, by concurrent importers of the race test).
 */
struct hil_mask_owner {
	struct list_head node;
	struct pci_dev *pdev;
	unsigned int users;
	u64 saved;
	u64 saved_coherent;
	u64 set;
};

static LIST_HEAD(hil_mask_owners);
static DEFINE_MUTEX(hil_mask_lock);

static inline struct hil_mask_owner *hil_mask_owner_find(struct pci_dev *pdev)
{
	struct hil_mask_owner *o;

	list_for_each_entry(o, &hil_mask_owners, node)
		if (o->pdev == pdev)
			return o;
	return NULL;
}

static inline int hil_dma_mask_set(struct pci_dev *pdev, u32 bits,
				   struct hil_dma_mask *m)
{
	struct device *dev = &pdev->dev;
	struct hil_mask_owner *o;
	int ret = 0;

	if (!bits)
		return 0;
	if (bits < 32 || bits > 64)
		return -EINVAL;

	device_lock(dev);
	mutex_lock(&hil_mask_lock);
	if (dev->driver) {
		ret = -EBUSY;
		goto out;
	}
	o = hil_mask_owner_find(pdev);
	if (o) {
		/* Another live attachment holds a different mask: not both. */
		if (o->set != DMA_BIT_MASK(bits)) {
			ret = -EBUSY;
			goto out;
		}
		o->users++;
	} else {
		o = kzalloc(sizeof(*o), GFP_KERNEL);
		if (!o) {
			ret = -ENOMEM;
			goto out;
		}
		o->pdev = pdev;
		o->users = 1;
		o->saved = dma_get_mask(dev);
		o->saved_coherent = dev->coherent_dma_mask;
		o->set = DMA_BIT_MASK(bits);
		ret = dma_set_mask_and_coherent(dev, o->set);
		if (ret) {
			kfree(o);
			goto out;
		}
		list_add(&o->node, &hil_mask_owners);
	}
	m->set = o->set;
	m->changed = true;
out:
	mutex_unlock(&hil_mask_lock);
	device_unlock(dev);
	return ret;
}

/* The last attachment of an override puts the mask back (unless a driver changed it since). */
static inline void hil_dma_mask_restore(struct pci_dev *pdev,
					struct hil_dma_mask *m)
{
	struct device *dev = &pdev->dev;
	struct hil_mask_owner *o;

	if (!m->changed)
		return;
	device_lock(dev);
	mutex_lock(&hil_mask_lock);
	o = hil_mask_owner_find(pdev);
	if (o && !--o->users) {
		if (!dev->driver && dma_get_mask(dev) == o->set) {
			dma_set_mask(dev, o->saved);
			dma_set_coherent_mask(dev, o->saved_coherent);
		}
		list_del(&o->node);
		kfree(o);
	}
	mutex_unlock(&hil_mask_lock);
	device_unlock(dev);
	m->changed = false;
}

/*
 * A snapshot of a DMA list, taken under the dma-buf's reservation lock and
 * copied to userspace after it is dropped: faulting on user memory while
 * holding dma_resv would invert the mmap_lock -> dma_resv order.
 */
struct hil_sg_snapshot {
	u32 nents;
	u32 orig_nents;
	u32 count;			/* entries stored below */
	struct hil_sg_entry *entries;
};

static inline int hil_sg_snapshot_alloc(struct hil_sg_snapshot *snap,
					u32 capacity)
{
	snap->count = 0;
	snap->entries = NULL;
	if (!capacity)
		return 0;
	if (capacity > HIL_SG_MAX_CAPACITY)
		return -E2BIG;
	snap->entries = kvmalloc_array(capacity, sizeof(*snap->entries),
				       GFP_KERNEL);
	return snap->entries ? 0 : -ENOMEM;
}

static inline void hil_sg_snapshot_take(struct hil_sg_snapshot *snap,
					u32 capacity, struct scatterlist *sgl,
					unsigned int nents,
					unsigned int orig_nents)
{
	struct scatterlist *sg;
	unsigned int i;

	snap->nents = nents;
	snap->orig_nents = orig_nents;
	snap->count = min_t(u32, nents, capacity);
	for_each_sg(sgl, sg, snap->count, i) {
		snap->entries[i].dma_addr = sg_dma_address(sg);
		snap->entries[i].len = sg_dma_len(sg);
	}
}

/* Copy entries and counts out; frees the snapshot. */
static inline int hil_sg_snapshot_put(struct hil_sg_snapshot *snap,
				      struct hil_sg_request *req,
				      struct hil_sg_request __user *ureq)
{
	void __user *uentries = u64_to_user_ptr(req->entries_ptr);
	int ret = 0;

	req->nents = snap->nents;
	req->orig_nents = snap->orig_nents;
	if (snap->count &&
	    copy_to_user(uentries, snap->entries,
			 snap->count * sizeof(*snap->entries)))
		ret = -EFAULT;
	if (!ret && copy_to_user(ureq, req, sizeof(*req)))
		ret = -EFAULT;
	kvfree(snap->entries);
	snap->entries = NULL;
	return ret;
}

static inline int hil_dma_dir(u32 direction, enum dma_data_direction *dir)
{
	switch (direction) {
	case HIL_DMA_BIDIRECTIONAL:
		*dir = DMA_BIDIRECTIONAL;
		return 0;
	case HIL_DMA_TO_DEVICE:
		*dir = DMA_TO_DEVICE;
		return 0;
	case HIL_DMA_FROM_DEVICE:
		*dir = DMA_FROM_DEVICE;
		return 0;
	}
	return -EINVAL;
}

#endif /* HIL_COMMON_H */
