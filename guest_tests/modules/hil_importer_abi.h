/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * ioctl ABI of the p2p-hil test importers (/dev/hil_p2p and /dev/hil_rdma).
 *
 * Mirrored by guest_tests/hil_importer/abi.py (ctypes); tests/test_modules_abi.py
 * compiles this header on the host and checks that both agree on every size,
 * offset and request number. Every struct has explicit padding so that its
 * layout is the same for any compiler; change HIL_IMPORTER_ABI_VERSION with
 * any layout change.
 *
 * Errors are returned as negative errno from the ioctl (errno in userspace).
 */
#ifndef HIL_IMPORTER_ABI_H
#define HIL_IMPORTER_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define HIL_IMPORTER_ABI_VERSION	1
#define HIL_IMPORTER_IOC_MAGIC		0xB9	/* unused in ioctl-number.rst */

/* GET_VERSION.features: what this build of the module can do (compile probes) */
#define HIL_FEAT_REVOKE_CB		(1U << 0) /* importer revocation callback */
#define HIL_FEAT_INVALIDATE_MAPPINGS	(1U << 1) /* ...named invalidate_mappings */
#define HIL_FEAT_MOVE_NOTIFY		(1U << 2) /* ...named move_notify */
#define HIL_FEAT_ATTACH_REVOCABLE	(1U << 3) /* dma_buf_attach_revocable() */
#define HIL_FEAT_UMEM_REVOCABLE		(1U << 4) /* ib_umem_dmabuf_get_pinned_revocable_and_lock */
#define HIL_FEAT_UMEM_PINNED_DMA_DEV	(1U << 5) /* ib_umem_dmabuf_get_pinned_with_dma_device */

struct hil_version {
	__u32 abi_version;	/* out: HIL_IMPORTER_ABI_VERSION */
	__u32 features;		/* out: HIL_FEAT_* */
};

/* The PCI function on whose behalf the importer maps (attach->dev) */
struct hil_pci_function {
	__u32 domain;
	__u8 bus;
	__u8 devfn;		/* PCI_DEVFN(slot, func) */
	__u16 pad;		/* must be 0 */
};

/* hil_p2p_attach.flags */
#define HIL_P2P_NO_P2P		(1U << 0) /* allow_peer2peer = false */
#define HIL_P2P_NO_REVOKE_CB	(1U << 1) /* no revocation callback */
#define HIL_P2P_STUBBORN	(1U << 2) /* callback counts but does not unmap */
#define HIL_P2P_ATTACH_FLAGS	(HIL_P2P_NO_P2P | HIL_P2P_NO_REVOKE_CB | \
				 HIL_P2P_STUBBORN)

struct hil_p2p_attach {
	__u32 version;		/* in: HIL_IMPORTER_ABI_VERSION */
	__s32 dmabuf_fd;	/* in */
	struct hil_pci_function dev; /* in: the importing device */
	__u32 flags;		/* in: HIL_P2P_* */
	/*
	 * in: 0 keeps the device's DMA mask (32 bits for a PCI function
	 * without driver); else set it to this many bits, as the device's
	 * driver would. Refused with EBUSY if a driver is bound.
	 */
	__u32 dma_mask_bits;
	__u32 handle;		/* out */
	__u32 pad;		/* must be 0 */
	__u64 dma_mask;		/* out: the device's DMA mask after attach */
};

/* enum dma_data_direction */
#define HIL_DMA_BIDIRECTIONAL	0
#define HIL_DMA_TO_DEVICE	1
#define HIL_DMA_FROM_DEVICE	2

/* Largest hil_sg_request.capacity accepted (bounds a kernel allocation) */
#define HIL_SG_MAX_CAPACITY	16384

struct hil_sg_entry {
	__u64 dma_addr;
	__u64 len;
};

/* MAP and SG (and RDMA SG): the mapping's DMA list */
struct hil_sg_request {
	__u32 handle;		/* in */
	__u32 direction;	/* in (MAP only): HIL_DMA_* */
	__u32 capacity;		/* in: entries at entries_ptr */
	__u32 nents;		/* out: entries in the mapping (may be > capacity) */
	__u64 entries_ptr;	/* in: user pointer to struct hil_sg_entry[capacity] */
	__u32 orig_nents;	/* out: sg_table.orig_nents (0: no CPU list) */
	__u32 pad;		/* must be 0 */
};

struct hil_handle {
	__u32 handle;
	__u32 pad;		/* must be 0 */
};

struct hil_p2p_status {
	__u32 handle;		/* in */
	__u32 flags;		/* out: the attach flags */
	__u32 mapped;		/* out: 1 while a mapping exists */
	__u32 revocations;	/* out: revocation callbacks seen */
	__s32 last_map_errno;	/* out: 0 or the negative errno of the last MAP */
	__u32 nents;		/* out: entries of the current mapping */
	__u64 dmabuf_size;	/* out */
};

/*
 * EDU_DMA: one transfer of QEMU's edu device (1234:11e8) DMA engine, so that
 * a test can move real bytes through a mapping made for the edu function.
 * The module enables the function, sets bus mastering, programs BAR0 (0x80
 * src, 0x88 dst, 0x90 count, 0x98 cmd), polls until the engine is idle and
 * disables the function again. edu's 4 KiB buffer is at device address
 * 0x40000; buf_offset + len must stay inside it (QEMU aborts otherwise).
 * Errors: EINVAL (bad direction/offset/length or pad), ENODEV (no such
 * function or not an edu), EBUSY (a driver is bound), ETIMEDOUT (the engine
 * stayed busy for timeout_ms). A DMA that the IOMMU refuses still completes
 * on edu's side: only the bytes tell.
 */
#define HIL_EDU_FROM_ADDR	0 /* dma_addr -> edu buffer */
#define HIL_EDU_TO_ADDR		1 /* edu buffer -> dma_addr ("to PCI", cmd bit 1) */
#define HIL_EDU_BUFFER_SIZE	4096

struct hil_edu_dma {
	struct hil_pci_function dev; /* in: an edu function without driver */
	__u32 direction;	/* in: HIL_EDU_* */
	__u32 buf_offset;	/* in: offset in edu's buffer */
	__u64 dma_addr;		/* in: the device address edu reads or writes */
	__u64 len;		/* in: bytes, 1 .. HIL_EDU_BUFFER_SIZE - buf_offset */
	__u32 timeout_ms;	/* in: 0 means 5000 */
	__u32 elapsed_us;	/* out: from the start command to the engine idle */
};

#define HIL_IOC_VERSION		_IOR(HIL_IMPORTER_IOC_MAGIC, 0x00, struct hil_version)
#define HIL_P2P_IOC_ATTACH	_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x01, struct hil_p2p_attach)
#define HIL_P2P_IOC_MAP		_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x02, struct hil_sg_request)
#define HIL_P2P_IOC_SG		_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x03, struct hil_sg_request)
#define HIL_P2P_IOC_UNMAP	_IOW(HIL_IMPORTER_IOC_MAGIC, 0x04, struct hil_handle)
#define HIL_P2P_IOC_DETACH	_IOW(HIL_IMPORTER_IOC_MAGIC, 0x05, struct hil_handle)
#define HIL_P2P_IOC_STATUS	_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x06, struct hil_p2p_status)
#define HIL_P2P_IOC_EDU_DMA	_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x07, struct hil_edu_dma)

/* hil_rdma_reg.mode: which ib_umem_dmabuf entry point registers the buffer */
#define HIL_RDMA_REVOCABLE	0 /* ib_umem_dmabuf_get_pinned_revocable_and_lock (irdma) */
#define HIL_RDMA_PINNED		1 /* ib_umem_dmabuf_get_pinned_with_dma_device: no revoke */
#define HIL_RDMA_DYNAMIC	2 /* ib_umem_dmabuf_get + map_pages (mlx5 style) */

struct hil_rdma_reg {
	__u32 version;		/* in: HIL_IMPORTER_ABI_VERSION */
	__s32 dmabuf_fd;	/* in */
	struct hil_pci_function dev; /* in: becomes ib_device.dma_device */
	__u32 mode;		/* in: HIL_RDMA_* */
	__u32 access;		/* in: IB_ACCESS_* */
	__u64 offset;		/* in: MR start within the dma-buf */
	__u64 length;		/* in: MR length */
	__u32 dma_mask_bits;	/* in: as hil_p2p_attach.dma_mask_bits */
	__u32 handle;		/* out */
};

struct hil_rdma_status {
	__u32 handle;		/* in */
	__u32 mode;		/* out */
	__u32 mapped;		/* out: umem has an sg table */
	__u32 revoked;		/* out: umem revoked (never maps again) */
	__u32 revocations;	/* out: revocation callbacks seen */
	__u32 nents;		/* out: entries of the umem's sg list */
};

#define HIL_RDMA_IOC_REG	_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x11, struct hil_rdma_reg)
#define HIL_RDMA_IOC_SG		_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x12, struct hil_sg_request)
#define HIL_RDMA_IOC_DEREG	_IOW(HIL_IMPORTER_IOC_MAGIC, 0x13, struct hil_handle)
#define HIL_RDMA_IOC_STATUS	_IOWR(HIL_IMPORTER_IOC_MAGIC, 0x14, struct hil_rdma_status)

#endif /* HIL_IMPORTER_ABI_H */
