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
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/xarray.h>

#include "hil_common.h"
#include "hil_edu.h"

struct hil_file {
	struct mutex lock;		/* serializes ioctls and release */
	struct xarray attachments;	/* handle -> struct hil_attachment */
};

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

	ret = xa_alloc(&f->attachments, &handle, a, xa_limit_31b, GFP_KERNEL);
	if (ret)
		goto err;

	req.handle = handle;
	req.dma_mask = dma_get_mask(&a->pdev->dev);
	if (copy_to_user(uarg, &req, sizeof(req))) {
		xa_erase(&f->attachments, handle);
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
	return xa_load(&f->attachments, handle);
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
	a = xa_erase(&f->attachments, req.handle);
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

static long hil_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct hil_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;
	long ret;

	mutex_lock(&f->lock);
	switch (cmd) {
	case HIL_IOC_VERSION:
		ret = hil_get_version(uarg);
		break;
	case HIL_P2P_IOC_ATTACH:
		ret = hil_attach(f, uarg);
		break;
	case HIL_P2P_IOC_MAP:
		ret = hil_map(f, uarg);
		break;
	case HIL_P2P_IOC_SG:
		ret = hil_sg(f, uarg);
		break;
	case HIL_P2P_IOC_UNMAP:
		ret = hil_unmap(f, uarg);
		break;
	case HIL_P2P_IOC_DETACH:
		ret = hil_detach(f, uarg);
		break;
	case HIL_P2P_IOC_STATUS:
		ret = hil_status(f, uarg);
		break;
	case HIL_P2P_IOC_EDU_DMA:
		ret = hil_edu_dma(uarg);
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&f->lock);
	return ret;
}

static int hil_open(struct inode *inode, struct file *file)
{
	struct hil_file *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f)
		return -ENOMEM;
	mutex_init(&f->lock);
	xa_init_flags(&f->attachments, XA_FLAGS_ALLOC1);
	file->private_data = f;
	return 0;
}

static int hil_release(struct inode *inode, struct file *file)
{
	struct hil_file *f = file->private_data;
	struct hil_attachment *a;
	unsigned long handle;

	mutex_lock(&f->lock);
	xa_for_each(&f->attachments, handle, a) {
		xa_erase(&f->attachments, handle);
		hil_release_one(a);
	}
	mutex_unlock(&f->lock);
	xa_destroy(&f->attachments);
	mutex_destroy(&f->lock);
	kfree(f);
	return 0;
}

static const struct file_operations hil_fops = {
	.owner = THIS_MODULE,
	.open = hil_open,
	.release = hil_release,
	.unlocked_ioctl = hil_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice hil_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "hil_p2p",
	.fops = &hil_fops,
	.mode = 0600,
};

static int __init hil_init(void)
{
	int ret = misc_register(&hil_misc);

	if (!ret)
		pr_info("abi %d, features 0x%x\n", HIL_IMPORTER_ABI_VERSION,
			hil_features());
	return ret;
}

static void __exit hil_exit(void)
{
	misc_deregister(&hil_misc);
}

module_init(hil_init);
module_exit(hil_exit);

MODULE_DESCRIPTION("p2p-hil test dma-buf importer");
MODULE_LICENSE("GPL");
HIL_IMPORT_DMA_BUF_NS();
