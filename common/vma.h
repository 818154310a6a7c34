/* The Proxmox VMA archive format: constants and small helpers shared by writer and reader.
 * Layout facts: ../shared/spec/vma-format.md. */
#ifndef VZ_VMA_H
#define VZ_VMA_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMA_MAGIC "VMA\0"
#define VMA_EXTENT_MAGIC "VMAE"
#define VMA_VERSION 1
#define VMA_BLOCK_SIZE 4096
#define VMA_CLUSTER_SIZE 65536
#define VMA_BLOCKS_PER_CLUSTER 16
#define VMA_ENTRIES_PER_EXTENT 59
#define VMA_EXTENT_HEADER_SIZE 512
#define VMA_MAX_EXTENT_SIZE (VMA_EXTENT_HEADER_SIZE + VMA_ENTRIES_PER_EXTENT * VMA_CLUSTER_SIZE)
#define VMA_FIXED_HEADER_SIZE 12288
#define VMA_MAX_HEADER_SIZE (8 * 65536)
#define VMA_MAX_CONFIGS 256
#define VMA_MAX_DEVICES 254
#define VMA_MAX_BLOB 65535

/* Offsets inside the fixed header. */
#define VMA_OFF_VERSION 4
#define VMA_OFF_UUID 8
#define VMA_OFF_CTIME 24
#define VMA_OFF_MD5 32
#define VMA_OFF_BLOB_OFFSET 48
#define VMA_OFF_BLOB_SIZE 52
#define VMA_OFF_HEADER_SIZE 56
#define VMA_OFF_CONFIG_NAMES 2044
#define VMA_OFF_CONFIG_DATA 3068
#define VMA_OFF_DEV_INFO 4096
#define VMA_DEV_INFO_SIZE 32

/* Offsets inside an extent header. */
#define VMA_EXT_OFF_RESERVED 4
#define VMA_EXT_OFF_BLOCK_COUNT 6
#define VMA_EXT_OFF_UUID 8
#define VMA_EXT_OFF_MD5 24
#define VMA_EXT_OFF_BLOCKINFO 40

static inline uint64_t vma_cluster_count(uint64_t size)
{
	/* Not (size + 65535) / 65536: a hostile size near 2^64 would wrap to a few clusters. */
	return size / VMA_CLUSTER_SIZE + (size % VMA_CLUSTER_SIZE != 0);
}

/* Bytes of cluster `cluster` that lie inside a device of `size` bytes: 64 KiB, or less for the
 * device's last cluster. */
static inline uint32_t vma_cluster_bytes(uint64_t size, uint64_t cluster)
{
	uint64_t left = size - cluster * VMA_CLUSTER_SIZE;
	return (uint32_t)(left < VMA_CLUSTER_SIZE ? left : VMA_CLUSTER_SIZE);
}

/* A name that is safe both in the archive and as a file name on extraction: not empty, no '/',
 * no control characters, not "." or "..". Returns NULL when valid, else why not. */
const char *vma_name_defect(const char *name);

/* True when the 4 KiB block at p is all zero. */
bool vma_block_is_zero(const uint8_t *p);

/* Renders a byte count as vzdump does: binary units with `decimals` decimals ("982.4 MiB"). */
void vma_render_bytes(char *buf, size_t len, double bytes, int decimals);
/* Renders whole seconds as vzdump does: "7s", "3m 7s", "1h 0m 7s". */
void vma_render_duration(char *buf, size_t len, double seconds);

#endif
