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
#include <rdma/ib_umem.h>
#include <rdma/ib_verbs.h>

#include "hil_chardev.h"

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

static long hil_rdma_reg(struct hil_file *f,
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

	ret = hil_file_store(f, mr, &handle);
	if (ret)
		goto err;
	req.handle = handle;
	if (copy_to_user(uarg, &req, sizeof(req))) {
		hil_file_take(f, handle);
		ret = -EFAULT;
		goto err;
	}
	return 0;

err:
	hil_mr_free(mr);
	return ret;
}

static long hil_rdma_sg(struct hil_file *f,
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
	mr = hil_file_lookup(f, req.handle);
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

static long hil_rdma_dereg(struct hil_file *f,
			   struct hil_handle __user *uarg)
{
	struct hil_handle req;
	struct hil_mr *mr;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	mr = hil_file_take(f, req.handle);
	if (!mr)
		return -ENOENT;
	hil_mr_free(mr);
	return 0;
}

static long hil_rdma_status(struct hil_file *f,
			    struct hil_rdma_status __user *uarg)
{
	struct hil_rdma_status req;
	struct hil_mr *mr;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	mr = hil_file_lookup(f, req.handle);
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

static long hil_dispatch(struct hil_file *f, unsigned int cmd,
			 void __user *uarg)
{
	switch (cmd) {
	case HIL_RDMA_IOC_REG:
		return hil_rdma_reg(f, uarg);
	case HIL_RDMA_IOC_SG:
		return hil_rdma_sg(f, uarg);
	case HIL_RDMA_IOC_DEREG:
		return hil_rdma_dereg(f, uarg);
	case HIL_RDMA_IOC_STATUS:
		return hil_rdma_status(f, uarg);
	default:
		return -ENOTTY;
	}
}

static void hil_free_object(void *obj)
{
	hil_mr_free(obj);
}

HIL_MISC_MODULE("hil_rdma");

MODULE_DESCRIPTION("p2p-hil test RDMA umem dma-buf importer");
MODULE_LICENSE("GPL");
