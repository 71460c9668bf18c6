/*
 * fnv: FNV-1a, 32 and 64 bits, over bytes, continuing from h (start with FNV32_START or
 * FNV64_START). For tables in memory and fingerprints that need no secrecy.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FNV32_START 2166136261u
#define FNV64_START 14695981039346656037ULL

static inline uint32_t fnv32(uint32_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static inline uint64_t fnv64(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ULL;
	return h;
}
