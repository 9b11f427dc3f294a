// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>
/*
 * Before v6.13 MODULE_IMPORT_NS took an identifier; since then a string
 * literal, and an identifier no longer compiles. A string compiles in both,
 * so probe the identifier.
 */
MODULE_IMPORT_NS(DMA_BUF);
