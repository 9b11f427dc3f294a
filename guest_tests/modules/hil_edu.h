/* SPDX-License-Identifier: GPL-2.0 */
/*
 * HIL_P2P_IOC_EDU_DMA: drive QEMU's edu device (hw/misc/edu.c) DMA engine
 * for one transfer, so that tests move real bytes through a dma-buf mapping
 * made for the edu function (see hil_importer_abi.h).
 *
 * edu has no driver in the guest. Each call claims the function for its
 * duration only: device_lock (no driver may bind meanwhile), enable, BAR0
 * region, bus mastering; all undone before returning. edu runs a transfer
 * from a QEMU timer (100 ms of virtual time after the start command) and
 * clears cmd bit 0 when done; a DMA the vIOMMU refuses still "completes".
 */
#ifndef HIL_EDU_H
#define HIL_EDU_H

#include <linux/delay.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/jiffies.h>
#include <linux/ktime.h>
#include <linux/pci.h>

#include "hil_common.h"

#define HIL_EDU_VENDOR		0x1234
#define HIL_EDU_DEVICE		0x11e8
#define HIL_EDU_REG_DMA_SRC	0x80
#define HIL_EDU_REG_DMA_DST	0x88
#define HIL_EDU_REG_DMA_CNT	0x90
#define HIL_EDU_REG_DMA_CMD	0x98
#define HIL_EDU_REGS_LEN	0x100
#define HIL_EDU_CMD_RUN		0x1
#define HIL_EDU_CMD_TO_PCI	0x2
#define HIL_EDU_BUFFER_ADDR	0x40000
#define HIL_EDU_TIMEOUT_MS	5000

/* Program one transfer and wait for it; the function is claimed by the caller. */
static inline int hil_edu_run(void __iomem *regs, const struct hil_edu_dma *req,
			      u32 *elapsed_us)
{
	u64 buf = HIL_EDU_BUFFER_ADDR + req->buf_offset;
	bool to_addr = req->direction == HIL_EDU_TO_ADDR;
	unsigned long deadline;
	ktime_t start;

	if (readq(regs + HIL_EDU_REG_DMA_CMD) & HIL_EDU_CMD_RUN)
		return -EBUSY;	/* a transfer of an earlier, timed-out call */
	writeq(to_addr ? buf : req->dma_addr, regs + HIL_EDU_REG_DMA_SRC);
	writeq(to_addr ? req->dma_addr : buf, regs + HIL_EDU_REG_DMA_DST);
	writeq(req->len, regs + HIL_EDU_REG_DMA_CNT);
	deadline = jiffies + msecs_to_jiffies(req->timeout_ms ?: HIL_EDU_TIMEOUT_MS);
	start = ktime_get();
	writeq(HIL_EDU_CMD_RUN | (to_addr ? HIL_EDU_CMD_TO_PCI : 0),
	       regs + HIL_EDU_REG_DMA_CMD);
	while (readq(regs + HIL_EDU_REG_DMA_CMD) & HIL_EDU_CMD_RUN) {
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		usleep_range(500, 2000);
	}
	*elapsed_us = min_t(s64, ktime_us_delta(ktime_get(), start), U32_MAX);
	return 0;
}

static inline long hil_edu_dma(struct hil_edu_dma __user *uarg)
{
	struct hil_edu_dma req;
	struct pci_dev *pdev;
	void __iomem *regs;
	u32 elapsed_us = 0;
	int ret;

	if (copy_from_user(&req, uarg, sizeof(req)))
		return -EFAULT;
	if (req.direction > HIL_EDU_TO_ADDR || !req.len ||
	    req.buf_offset >= HIL_EDU_BUFFER_SIZE ||
	    req.len > HIL_EDU_BUFFER_SIZE - req.buf_offset)
		return -EINVAL;
	pdev = hil_pci_dev_get(&req.dev);
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);
	if (pdev->vendor != HIL_EDU_VENDOR || pdev->device != HIL_EDU_DEVICE) {
		ret = -ENODEV;
		goto put;
	}

	device_lock(&pdev->dev);
	if (pdev->dev.driver) {
		ret = -EBUSY;
		goto unlock;
	}
	ret = pci_enable_device_mem(pdev);
	if (ret)
		goto unlock;
	ret = pci_request_region(pdev, 0, KBUILD_MODNAME);
	if (ret)
		goto disable;
	regs = pci_iomap(pdev, 0, HIL_EDU_REGS_LEN);
	if (!regs) {
		ret = -ENOMEM;
		goto release;
	}
	pci_set_master(pdev);
	ret = hil_edu_run(regs, &req, &elapsed_us);
	pci_clear_master(pdev);
	pci_iounmap(pdev, regs);
release:
	pci_release_region(pdev, 0);
disable:
	pci_disable_device(pdev);
unlock:
	device_unlock(&pdev->dev);
put:
	pci_dev_put(pdev);
	if (ret)
		return ret;
	req.elapsed_us = elapsed_us;
	return copy_to_user(uarg, &req, sizeof(req)) ? -EFAULT : 0;
}

#endif /* HIL_EDU_H */
