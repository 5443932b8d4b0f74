/* The host's free memory, for the checks made before a large allocation (a model on the CPU, a
 * dataset). */
#ifndef BP_CORE_HOSTMEM_H
#define BP_CORE_HOSTMEM_H

#include <stddef.h>

/* MemAvailable of /proc/meminfo in bytes: what the kernel can hand out without swapping; 0 when
 * it cannot be read (callers then check nothing). */
size_t bp_host_memory_available(void);

#endif
