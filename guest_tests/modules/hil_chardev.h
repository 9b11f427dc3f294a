/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The character device both importer modules are driven through. Objects a
 * test creates (attachments, MRs) belong to the open file and are found by a
 * handle; closing the file frees all of them, so a test that dies leaves
 * nothing attached. One mutex per file serializes its ioctls and release,
 * which keeps an object alive while an ioctl uses it.
 *
 * A module includes this header, defines hil_dispatch() (its own ioctls) and
 * hil_free_object() (how one of its objects is released), and ends with
 * HIL_MISC_MODULE("name") to register /dev/name.
 */
#ifndef HIL_CHARDEV_H
#define HIL_CHARDEV_H

#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/xarray.h>

#include "hil_common.h"

struct hil_file {
	struct mutex lock;	/* serializes ioctls and release */
	struct xarray objects;	/* handle -> the module's object */
};

static long hil_dispatch(struct hil_file *f, unsigned int cmd,
			 void __user *uarg);
static void hil_free_object(void *obj);

/* Handles start at 1: 0 is never valid, so a zeroed request cannot alias. */
static inline int hil_file_store(struct hil_file *f, void *obj, u32 *handle)
{
	return xa_alloc(&f->objects, handle, obj, xa_limit_31b, GFP_KERNEL);
}

static inline void *hil_file_lookup(struct hil_file *f, u32 handle)
{
	return xa_load(&f->objects, handle);
}

static inline void *hil_file_take(struct hil_file *f, u32 handle)
{
	return xa_erase(&f->objects, handle);
}

static inline int hil_file_open(struct inode *inode, struct file *file)
{
	struct hil_file *f = kzalloc(sizeof(*f), GFP_KERNEL);

	if (!f)
		return -ENOMEM;
	mutex_init(&f->lock);
	xa_init_flags(&f->objects, XA_FLAGS_ALLOC1);
	file->private_data = f;
	return 0;
}

static inline int hil_file_release(struct inode *inode, struct file *file)
{
	struct hil_file *f = file->private_data;
	unsigned long handle;
	void *obj;

	mutex_lock(&f->lock);
	xa_for_each(&f->objects, handle, obj) {
		xa_erase(&f->objects, handle);
		hil_free_object(obj);
	}
	mutex_unlock(&f->lock);
	xa_destroy(&f->objects);
	mutex_destroy(&f->lock);
	kfree(f);
	return 0;
}

static inline long hil_file_ioctl(struct file *file, unsigned int cmd,
				  unsigned long arg)
{
	struct hil_file *f = file->private_data;
	void __user *uarg = (void __user *)arg;
	long ret;

	mutex_lock(&f->lock);
	if (cmd == HIL_IOC_VERSION)
		ret = hil_get_version(uarg);
	else
		ret = hil_dispatch(f, cmd, uarg);
	mutex_unlock(&f->lock);
	return ret;
}

#define HIL_MISC_MODULE(devname)					\
static const struct file_operations hil_fops = {			\
	.owner = THIS_MODULE,						\
	.open = hil_file_open,						\
	.release = hil_file_release,					\
	.unlocked_ioctl = hil_file_ioctl,				\
	.compat_ioctl = compat_ptr_ioctl,				\
};									\
									\
static struct miscdevice hil_misc = {					\
	.minor = MISC_DYNAMIC_MINOR,					\
	.name = devname,						\
	.fops = &hil_fops,						\
	.mode = 0600,							\
};									\
									\
static int __init hil_init(void)					\
{									\
	int ret = misc_register(&hil_misc);				\
									\
	if (!ret)							\
		pr_info("abi %d, features 0x%x\n",			\
			HIL_IMPORTER_ABI_VERSION, hil_features());	\
	return ret;							\
}									\
									\
static void __exit hil_exit(void)					\
{									\
	misc_deregister(&hil_misc);					\
}									\
									\
module_init(hil_init);							\
module_exit(hil_exit)

#endif /* HIL_CHARDEV_H */
