// SPDX-License-Identifier: GPL-2.0
/*
 * hil_rdma_importer: registers a dma-buf through the RDMA core's umem import
 * API (drivers/infiniband/core/umem_dmabuf.c), the path an RDMA driver takes
 * for ibv_reg_dmabuf_mr(), and reports the umem's DMA list via /dev/hil_rdma.
 *
 * The ib_device is a stand-in: zeroed, never registered. The umem dma-buf
 * functions read only ib_device.dma_device (the struct device the dma-buf is
 * attached for) and store the pointer in umem->ibdev; nothing else of the
 * device is touched on import, map, revoke or release. Registering a real
 * device would need a full set of verbs ops and would expose an RDMA device
 * to userspace, for no gain in what is tested here.
 *
 * Locking as in hil_p2p_importer.c: a per-file mutex around every ioctl; the
 * umem's mapping state is protected by the dma-buf's reservation lock.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/dma-buf.h>
#include <linux/dma-resv.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/xarray.h>
#include <rdma/ib_umem.h>
#include <rdma/ib_verbs.h>

#include "hil_common.h"

struct hil_rdma_file {
	struct mutex lock;		/* serializes ioctls and release */
	struct xarray mrs;		/* handle -> struct hil_mr */
};

struct hil_mr {
	struct ib_device *ibdev;	/* the stand-in; see the top comment */
	struct ib_umem_dmabuf *umem;
	struct pci_dev *pdev;
	struct hil_dma_mask mask;
	u32 mode;
	u32 revocations;		/* protected by the dma-buf's resv */
};

static struct dma_resv *hil_mr_resv(struct hil_mr *mr)
{
	return mr->umem->attach->dmabuf->resv;
}

#ifdef HIL_HAVE_UMEM_REVOCABLE
/* ib_umem_dmabuf_revoke_locked() calls this before it unmaps and unpins. */
static void hil_mr_revoke(void *priv)
{
	struct hil_mr *mr = priv;

	mr->revocations++;
}
#endif

#if HIL_CAN_REVOKE
/* Dynamic mode, as mlx5 does: drop the mapping, map again on demand. */
static void hil_mr_invalidate(struct dma_buf_attachment *attach)
{
	struct ib_umem_dmabuf *umem = attach->importer_priv;
	struct hil_mr *mr = umem->private;

	if (mr)
		mr->revocations++;
	ib_umem_dmabuf_unmap_pages(umem);
}

static const struct dma_buf_attach_ops hil_mr_dynamic_ops = {
	.allow_peer2peer = true,
#ifdef HIL_HAVE_INVALIDATE_MAPPINGS
	.invalidate_mappings = hil_mr_invalidate,
#else
	.move_notify = hil_mr_invalidate,
#endif
};
#endif

static void hil_mr_free(struct hil_mr *mr)
{
	if (!IS_ERR_OR_NULL(mr->umem))
		ib_umem_release(&mr->umem->umem);	/* revokes, unmaps, detaches */
	if (mr->pdev) {
		hil_dma_mask_restore(mr->pdev, &mr->mask);
		pci_dev_put(mr->pdev);
	}
	kfree(mr->ibdev);
	kfree(mr);
}

static struct ib_umem_dmabuf *hil_umem_get(struct hil_mr *mr,
					   const struct hil_rdma_reg *req)
{
	struct ib_umem_dmabuf *umem = ERR_PTR(-EOPNOTSUPP);

	switch (req->mode) {
	case HIL_RDMA_REVOCABLE:
#ifdef HIL_HAVE_UMEM_REVOCABLE
		umem = ib_umem_dmabuf_get_pinned_revocable_and_lock(mr->ibdev,
				req->offset, req->length, req->dmabuf_fd,
				req->access);
		if (IS_ERR(umem))
			return umem;
		ib_umem_dmabuf_set_revoke_locked(umem, hil_mr_revoke, mr);
		ib_umem_dmabuf_revoke_unlock(umem);
#endif
		return umem;
	case HIL_RDMA_PINNED:
#ifdef HIL_HAVE_UMEM_PINNED_DMA_DEV
		umem = ib_umem_dmabuf_get_pinned_with_dma_device(mr->ibdev,
				mr->ibdev->dma_device, req->offset, req->length,
				req->dmabuf_fd, req->access);
#endif
		return umem;
	case HIL_RDMA_DYNAMIC:
#if HIL_CAN_REVOKE
	{
		int ret;

		umem = ib_umem_dmabuf_get(mr->ibdev, req->offset, req->length,
					  req->dmabuf_fd, req->access,
					  &hil_mr_dynamic_ops);
		if (IS_ERR(umem))
			return umem;
		/* importer_priv is the umem: find the mr through ->private */
		umem->private = mr;
		dma_resv_lock(umem->attach->dmabuf->resv, NULL);
		ret = ib_umem_dmabuf_map_pages(umem);
		dma_resv_unlock(umem->attach->dmabuf->resv);
		if (ret) {
			ib_umem_release(&umem->umem);
			return ERR_PTR(ret);
		}
	}
#endif
		return umem;
	}
	return ERR_PTR(-EINVAL);
}

static long hil_rdma_reg(struct hil_rdma_file *f,
			 struct hil_rdma_reg __user *uarg)
{
	struct hil_rdma_reg req;
	struct hil_mr *mr;
	u32 handle;
	int ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.version != HIL_IMPORTER_ABI_VERSION)
		return -EPROTO;

	mr = kzalloc(sizeof(*mr), GFP_KERNEL);
	if (!mr)
		return -ENOMEM;
	mr->mode = req.mode;
	mr->ibdev = kzalloc(sizeof(*mr->ibdev), GFP_KERNEL);
	if (!mr->ibdev) {
		ret = -ENOMEM;
		goto err;
	}
	mr->pdev = hil_pci_dev_get(&req.dev);
	if (IS_ERR(mr->pdev)) {
		ret = PTR_ERR(mr->pdev);
		mr->pdev = NULL;
		goto err;
	}
	ret = hil_dma_mask_set(mr->pdev, req.dma_mask_bits, &mr->mask);
	if (ret)
		goto err;
	mr->ibdev->dma_device = &mr->pdev->dev;

	mr->umem = hil_umem_get(mr, &req);
	if (IS_ERR(mr->umem)) {
		ret = PTR_ERR(mr->umem);
		goto err;
	}

	ret = xa_alloc(&f->mrs, &handle, mr, xa_limit_31b, GFP_KERNEL);
	if (ret)
		goto err;
	req.handle = handle;
	if (copy_to_user(uarg, &req, sizeof(req))) {
		xa_erase(&f->mrs, handle);
		ret = -EFAULT;
		goto err;
	}
	return 0;

err:
	hil_mr_free(mr);
	return ret;
}

static long hil_rdma_sg(struct hil_rdma_file *f,
			struct hil_sg_request __user *uarg)
{
	struct hil_sg_snapshot snap;
	struct hil_sg_request req;
	struct sg_table *umem_sgt;
	struct hil_mr *mr;
	int ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.pad)
		return -EINVAL;
	mr = xa_load(&f->mrs, req.handle);
	if (!mr)
		return -ENOENT;
	ret = hil_sg_snapshot_alloc(&snap, req.capacity);
	if (ret)
		return ret;

	dma_resv_lock(hil_mr_resv(mr), NULL);
	if (mr->umem->sgt) {
		/*
		 * The umem's view: the dma-buf's list trimmed in place to
		 * [offset, offset + length); orig_nents is the dma-buf's.
		 */
		umem_sgt = &mr->umem->umem.sgt_append.sgt;
		hil_sg_snapshot_take(&snap, req.capacity, umem_sgt->sgl,
				     umem_sgt->nents,
				     mr->umem->sgt->orig_nents);
	} else {
		ret = -ENODATA;
	}
	dma_resv_unlock(hil_mr_resv(mr));
	if (ret) {
		kvfree(snap.entries);
		return ret;
	}
	return hil_sg_snapshot_put(&snap, &req, uarg);
}

static long hil_rdma_dereg(struct hil_rdma_file *f,
			   struct hil_handle __user *uarg)
{
	struct hil_handle req;
	struct hil_mr *mr;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	mr = xa_erase(&f->mrs, req.handle);
	if (!mr)
		return -ENOENT;
	hil_mr_free(mr);
	return 0;
}

static long hil_rdma_status(struct hil_rdma_file *f,
			    struct hil_rdma_status __user *uarg)
{
	struct hil_rdma_status req;
	struct hil_mr *mr;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	mr = xa_load(&f->mrs, req.handle);
	if (!mr)
		return -ENOENT;
	dma_resv_lock(hil_mr_resv(mr), NULL);
	req.mode = mr->mode;
	req.mapped = !!mr->umem->sgt;
	req.revoked = mr->umem->revoked;
	req.revocations = mr->revocations;
	req.nents = mr->umem->sgt ? mr->umem->umem.sgt_append.sgt.nents : 0;
	dma_resv_unlock(hil_mr_resv(mr));
	return copy_to_user(uarg, &req, sizeof(req)) ? -EFAULT : 0;
}

static long hil_rdma_ioctl(struct file *file, unsigned int cmd,
			   unsigned long arg)
{
	struct hil_rdma_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;
	long ret;

	mutex_lock(&f->lock);
	switch (cmd) {
	case HIL_IOC_VERSION:
		ret = hil_get_version(uarg);
		break;
	case HIL_RDMA_IOC_REG:
		ret = hil_rdma_reg(f, uarg);
		break;
	case HIL_RDMA_IOC_SG:
		ret = hil_rdma_sg(f, uarg);
		break;
	case HIL_RDMA_IOC_DEREG:
		ret = hil_rdma_dereg(f, uarg);
		break;
	case HIL_RDMA_IOC_STATUS:
		ret = hil_rdma_status(f, uarg);
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&f->lock);
	return ret;
}

static int hil_rdma_open(struct inode *inode, struct file *file)
{
	struct hil_rdma_file *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f)
		return -ENOMEM;
	mutex_init(&f->lock);
	xa_init_flags(&f->mrs, XA_FLAGS_ALLOC1);
	file->private_data = f;
	return 0;
}

static int hil_rdma_release(struct inode *inode, struct file *file)
{
	struct hil_rdma_file *f = file->private_data;
	unsigned long handle;
	struct hil_mr *mr;

	mutex_lock(&f->lock);
	xa_for_each(&f->mrs, handle, mr) {
		xa_erase(&f->mrs, handle);
		hil_mr_free(mr);
	}
	mutex_unlock(&f->lock);
	xa_destroy(&f->mrs);
	mutex_destroy(&f->lock);
	kfree(f);
	return 0;
}

static const struct file_operations hil_rdma_fops = {
	.owner = THIS_MODULE,
	.open = hil_rdma_open,
	.release = hil_rdma_release,
	.unlocked_ioctl = hil_rdma_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice hil_rdma_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "hil_rdma",
	.fops = &hil_rdma_fops,
	.mode = 0600,
};

static int __init hil_rdma_init(void)
{
	int ret = misc_register(&hil_rdma_misc);

	if (!ret)
		pr_info("abi %d, features 0x%x\n", HIL_IMPORTER_ABI_VERSION,
			hil_features());
	return ret;
}

static void __exit hil_rdma_exit(void)
{
	misc_deregister(&hil_rdma_misc);
}

module_init(hil_rdma_init);
module_exit(hil_rdma_exit);

MODULE_DESCRIPTION("p2p-hil test RDMA umem dma-buf importer");
MODULE_LICENSE("GPL");
