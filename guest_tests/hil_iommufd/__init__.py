"""hil_iommufd: the iommufd importer from user space (typed ctypes, stdlib only).

/dev/iommu and an IOAS (iommufd.py), a VFIO device through its cdev bound to that iommufd (cdev.py),
and QEMU's edu DMA engine driven through that device's BAR0 (edu.py): what a VMM does to let one
passthrough device DMA into another's BAR through a VFIO dma-buf mapped with IOMMU_IOAS_MAP_FILE.
"""
