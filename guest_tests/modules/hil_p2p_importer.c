// SPDX-License-Identifier: GPL-2.0
/*
 * hil_p2p_importer: a dynamic dma-buf importer driven from userspace through
 * /dev/hil_p2p, so that tests can attach an exporter's dma-buf on behalf of any
 * PCI function and see the DMA list the exporter produced for it.
 *
 * Attachments belong to the open file: closing it unmaps and detaches all of
 * them, so a crashed test leaves nothing attached.
 *
 * EDU_DMA (hil_edu.h) programs QEMU's edu DMA engine, so that the addresses
 * of a mapping can be used by a real device and the bytes checked.
 *
 * Locking: hil_file.lock serializes the ioctls and release of one file (it
 * keeps an attachment alive while an ioctl uses it). The mapping state of an
 * attachment is protected by its dma-buf's reservation lock, which is also
 * held when the exporter calls the revocation callback.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-buf.h>
#include <linux/dma-resv.h>

#include "hil_chardev.h"
#include "hil_edu.h"

struct hil_attachment {
	struct dma_buf *dmabuf;
	struct dma_buf_attachment *attach;
	struct pci_dev *pdev;
	struct hil_dma_mask mask;
	u32 flags;
	/* protected by dmabuf->resv */
	struct sg_table *sgt;
	enum dma_data_direction dir;
	u32 revocations;
	int last_map_errno;
};

static void hil_unmap_locked(struct hil_attachment *a)
{
	dma_resv_assert_held(a->dmabuf->resv);
	if (!a->sgt)
		return;
	dma_buf_unmap_attachment(a->attach, a->sgt, a->dir);
	a->sgt = NULL;
}

#if HIL_CAN_REVOKE
/* Called by the exporter with the reservation lock held. */
static void hil_revoke(struct dma_buf_attachment *attach)
{
	struct hil_attachment *a = attach->importer_priv;

	a->revocations++;
	/*
	 * STUBBORN models an importer that ignores revocation: the exporter
	 * then waits until UNMAP, DETACH or close of /dev/hil_p2p.
	 */
	if (a->flags & HIL_P2P_STUBBORN)
		return;
	hil_unmap_locked(a);
}

#ifdef HIL_HAVE_INVALIDATE_MAPPINGS
#define HIL_REVOKE_OP .invalidate_mappings = hil_revoke
#else
#define HIL_REVOKE_OP .move_notify = hil_revoke
#endif
#endif /* HIL_CAN_REVOKE */

/* [allow_peer2peer][has revocation callback] */
static const struct dma_buf_attach_ops hil_ops[2][2] = {
	[0][0] = { .allow_peer2peer = false },
	[1][0] = { .allow_peer2peer = true },
#if HIL_CAN_REVOKE
	[0][1] = { .allow_peer2peer = false, HIL_REVOKE_OP },
	[1][1] = { .allow_peer2peer = true, HIL_REVOKE_OP },
#endif
};

static void hil_release_one(struct hil_attachment *a)
{
	if (a->attach) {
		dma_resv_lock(a->dmabuf->resv, NULL);
		hil_unmap_locked(a);
		dma_resv_unlock(a->dmabuf->resv);
		dma_buf_detach(a->dmabuf, a->attach);
	}
	if (a->dmabuf)
		dma_buf_put(a->dmabuf);
	if (a->pdev) {
		hil_dma_mask_restore(a->pdev, &a->mask);
		pci_dev_put(a->pdev);
	}
	kfree(a);
}

static long hil_attach(struct hil_file *f, struct hil_p2p_attach __user *uarg)
{
	const struct dma_buf_attach_ops *ops;
	struct hil_p2p_attach req;
	struct hil_attachment *a;
	struct dma_buf *dmabuf;
	u32 handle;
	int ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.version != HIL_IMPORTER_ABI_VERSION)
		return -EPROTO;
	if ((req.flags & ~HIL_P2P_ATTACH_FLAGS) || req.pad)
		return -EINVAL;
	if (!(req.flags & HIL_P2P_NO_REVOKE_CB) && !HIL_CAN_REVOKE)
		return -EOPNOTSUPP;
	ops = &hil_ops[!(req.flags & HIL_P2P_NO_P2P)]
		      [!(req.flags & HIL_P2P_NO_REVOKE_CB)];

	a = kzalloc(sizeof(*a), GFP_KERNEL);
	if (!a)
		return -ENOMEM;
	a->flags = req.flags;

	a->pdev = hil_pci_dev_get(&req.dev);
	if (IS_ERR(a->pdev)) {
		ret = PTR_ERR(a->pdev);
		a->pdev = NULL;
		goto err;
	}
	ret = hil_dma_mask_set(a->pdev, req.dma_mask_bits, &a->mask);
	if (ret)
		goto err;

	dmabuf = dma_buf_get(req.dmabuf_fd);
	if (IS_ERR(dmabuf)) {
		ret = PTR_ERR(dmabuf);
		goto err;
	}
	a->dmabuf = dmabuf;

	a->attach = dma_buf_dynamic_attach(dmabuf, &a->pdev->dev, ops, a);
	if (IS_ERR(a->attach)) {
		ret = PTR_ERR(a->attach);
		a->attach = NULL;
		goto err;
	}

	ret = hil_file_store(f, a, &handle);
	if (ret)
		goto err;

	req.handle = handle;
	req.dma_mask = dma_get_mask(&a->pdev->dev);
	if (copy_to_user(uarg, &req, sizeof(req))) {
		hil_file_take(f, handle);
		ret = -EFAULT;
		goto err;
	}
	return 0;

err:
	hil_release_one(a);
	return ret;
}

static struct hil_attachment *hil_lookup(struct hil_file *f, u32 handle)
{
	return hil_file_lookup(f, handle);
}

static long hil_map(struct hil_file *f, struct hil_sg_request __user *uarg)
{
	struct hil_sg_snapshot snap;
	struct hil_sg_request req;
	enum dma_data_direction dir;
	struct hil_attachment *a;
	struct sg_table *sgt;
	int ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.pad)
		return -EINVAL;
	a = hil_lookup(f, req.handle);
	if (!a)
		return -ENOENT;
	ret = hil_dma_dir(req.direction, &dir);
	if (ret)
		return ret;
	ret = hil_sg_snapshot_alloc(&snap, req.capacity);
	if (ret)
		return ret;

	dma_resv_lock(a->dmabuf->resv, NULL);
	if (a->sgt) {
		ret = -EBUSY;
		goto unlock;
	}
	sgt = dma_buf_map_attachment(a->attach, dir);
	if (IS_ERR(sgt)) {
		ret = PTR_ERR(sgt);
		a->last_map_errno = ret;
		goto unlock;
	}
	a->sgt = sgt;
	a->dir = dir;
	a->last_map_errno = 0;
	hil_sg_snapshot_take(&snap, req.capacity, sgt->sgl, sgt->nents,
			     sgt->orig_nents);
unlock:
	dma_resv_unlock(a->dmabuf->resv);
	if (ret) {
		kvfree(snap.entries);
		return ret;
	}
	/* A failed copy-out leaves the mapping in place: UNMAP still works. */
	return hil_sg_snapshot_put(&snap, &req, uarg);
}

static long hil_sg(struct hil_file *f, struct hil_sg_request __user *uarg)
{
	struct hil_sg_snapshot snap;
	struct hil_sg_request req;
	struct hil_attachment *a;
	int ret = 0;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.pad)
		return -EINVAL;
	a = hil_lookup(f, req.handle);
	if (!a)
		return -ENOENT;
	ret = hil_sg_snapshot_alloc(&snap, req.capacity);
	if (ret)
		return ret;

	dma_resv_lock(a->dmabuf->resv, NULL);
	if (a->sgt) {
		req.direction = a->dir;
		hil_sg_snapshot_take(&snap, req.capacity, a->sgt->sgl,
				     a->sgt->nents, a->sgt->orig_nents);
	} else {
		ret = -ENODATA;
	}
	dma_resv_unlock(a->dmabuf->resv);
	if (ret) {
		kvfree(snap.entries);
		return ret;
	}
	return hil_sg_snapshot_put(&snap, &req, uarg);
}

static long hil_unmap(struct hil_file *f, struct hil_handle __user *uarg)
{
	struct hil_attachment *a;
	struct hil_handle req;
	int ret = 0;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	a = hil_lookup(f, req.handle);
	if (!a)
		return -ENOENT;
	dma_resv_lock(a->dmabuf->resv, NULL);
	if (a->sgt)
		hil_unmap_locked(a);
	else
		ret = -ENODATA;
	dma_resv_unlock(a->dmabuf->resv);
	return ret;
}

static long hil_detach(struct hil_file *f, struct hil_handle __user *uarg)
{
	struct hil_attachment *a;
	struct hil_handle req;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	a = hil_file_take(f, req.handle);
	if (!a)
		return -ENOENT;
	hil_release_one(a);
	return 0;
}

static long hil_status(struct hil_file *f, struct hil_p2p_status __user *uarg)
{
	struct hil_p2p_status req;
	struct hil_attachment *a;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	a = hil_lookup(f, req.handle);
	if (!a)
		return -ENOENT;
	dma_resv_lock(a->dmabuf->resv, NULL);
	req.flags = a->flags;
	req.mapped = !!a->sgt;
	req.revocations = a->revocations;
	req.last_map_errno = a->last_map_errno;
	req.nents = a->sgt ? a->sgt->nents : 0;
	req.dmabuf_size = a->dmabuf->size;
	dma_resv_unlock(a->dmabuf->resv);
	return copy_to_user(uarg, &req, sizeof(req)) ? -EFAULT : 0;
}

static long hil_dispatch(struct hil_file *f, unsigned int cmd,
			 void __user *uarg)
{
	switch (cmd) {
	case HIL_P2P_IOC_ATTACH:
		return hil_attach(f, uarg);
	case HIL_P2P_IOC_MAP:
		return hil_map(f, uarg);
	case HIL_P2P_IOC_SG:
		return hil_sg(f, uarg);
	case HIL_P2P_IOC_UNMAP:
		return hil_unmap(f, uarg);
	case HIL_P2P_IOC_DETACH:
		return hil_detach(f, uarg);
	case HIL_P2P_IOC_STATUS:
		return hil_status(f, uarg);
	case HIL_P2P_IOC_EDU_DMA:
		return hil_edu_dma(uarg);
	default:
		return -ENOTTY;
	}
}

static void hil_free_object(void *obj)
{
	hil_release_one(obj);
}

HIL_MISC_MODULE("hil_p2p");

MODULE_DESCRIPTION("p2p-hil test dma-buf importer");
MODULE_LICENSE("GPL");
HIL_IMPORT_DMA_BUF_NS();
