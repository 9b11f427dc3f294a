// SPDX-License-Identifier: GPL-2.0
#include "needs_umem.h"
