/*
 * Public structs that can grow carry their size as their first member
 * (size_t struct_size, set by the struct's _init function). The library
 * reads and writes only the bytes the caller's header knew of, so a program
 * built against an older header keeps working with a newer library.
 */
#ifndef EVBUS_SUPPORT_STRUCTS_H
#define EVBUS_SUPPORT_STRUCTS_H

#include <stddef.h>

/* The size of a struct up to and including member m: a struct's size as of
 * the release whose last member was m. */
#define EVBUS__SIZE_THROUGH(type, m) (offsetof(type, m) + sizeof(((type *)0)->m))

/* The public _init functions are inlines in the headers that pass the
 * size the caller's header gives the struct (sizeof) to an exported
 * _init_sized function, so a library newer than the program's header
 * writes only the bytes the program has. */

/* Zeroes the size bytes at p and sets its struct_size to size: the body
 * of every _init_sized function of an output struct. p NULL, or size too
 * small to hold struct_size, is ignored. */
void evbus__struct_init(void *p, size_t size);

/* The body of every _init_sized function of an input struct: writes the
 * library's defaults (a full struct of defaults_size bytes) into the
 * caller's struct of size bytes - the bytes both know of, zeroes past the
 * library's size - and sets its struct_size to size. p NULL, or size too
 * small to hold struct_size, is ignored. */
void evbus__struct_defaults(void *p, size_t size, const void *defaults,
                            size_t defaults_size);

/* Overlays a caller's struct on dst, which already holds the library's
 * defaults for the full struct of dst_size bytes: copies min(struct_size,
 * dst_size) bytes of src and sets dst's struct_size to dst_size. Returns
 * EVBUS_OK, or EVBUS_EINVAL when src's struct_size is below min_size (not
 * initialised by its _init function). */
int evbus__struct_in(void *dst, size_t dst_size, const void *src,
                     size_t min_size);

/* Copies the library's struct src (src_size bytes) out to the caller's
 * dst: at most dst's struct_size bytes, keeping dst's struct_size. Returns
 * EVBUS_OK, or EVBUS_EINVAL when dst's struct_size is below min_size. */
int evbus__struct_out(void *dst, const void *src, size_t src_size,
                      size_t min_size);

#endif
