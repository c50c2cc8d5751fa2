/*
 * ubootenv.h: the U-Boot environment block, as u-boot-tools' mkenvimage and
 * libubootenv's fw_printenv/fw_setenv read and write it (single copy, little
 * endian): a CRC32 of the data area, then "key=value\0" pairs, an empty
 * string ending the list, padding up to the block size.
 *
 * Nerves devices keep their firmware state (active slot, upgrade flags,
 * serial number) in such a block at byte 0x2000 of the disk. This codec is
 * pure (no I/O besides the optional file helpers) so the supervisor can
 * decode blocks however it obtained them (see env.h for overlays).
 */
#pragma once
#include <glib.h>

#define NF_UBOOTENV_DEFAULT_OFFSET 0x2000
#define NF_UBOOTENV_DEFAULT_SIZE 0x20000

#define NF_UBOOTENV_ERROR (nf_ubootenv_error_quark())
GQuark nf_ubootenv_error_quark(void);

typedef enum {
  NF_UBOOTENV_ERROR_BAD_CRC,   /* stored CRC does not match the data */
  NF_UBOOTENV_ERROR_INVALID,   /* malformed block, or a size/key we refuse */
  NF_UBOOTENV_ERROR_TOO_LARGE, /* variables do not fit the block */
} NfUbootEnvError;

typedef struct NfUbootEnv NfUbootEnv;

/* An empty environment for a block of `size` bytes (> 6). Never NULL. */
NfUbootEnv *nf_ubootenv_new(gsize size);

/* Decodes a whole block (`len` is the block size). `origin` (e.g. the file
 * name and offset) is only used to make error messages say where the block
 * came from. Returns a new env, or NULL with NF_UBOOTENV_ERROR_BAD_CRC (an
 * unwritten or corrupt block) or _INVALID. Duplicated keys: the last wins,
 * as in U-Boot. The padding byte is remembered so that serializing an
 * unchanged env gives back the same bytes. */
NfUbootEnv *nf_ubootenv_parse(const guint8 *data, gsize len, const char *origin, GError **error);

/* Encodes the env into a newly allocated block of nf_ubootenv_get_size()
 * bytes with a valid CRC; variables keep their order (new ones go last), as
 * mkenvimage does. Returns NULL with _TOO_LARGE if they do not fit. */
guint8 *nf_ubootenv_serialize(const NfUbootEnv *env, gsize *len, GError **error);

/* The value of `key`, or NULL. Owned by env, valid until it changes. */
const char *nf_ubootenv_get(const NfUbootEnv *env, const char *key);

/* Sets key=value (replacing in place if present). Fails with _INVALID for an
 * empty key or one containing '=' (U-Boot could not parse it back). */
gboolean nf_ubootenv_set(NfUbootEnv *env, const char *key, const char *value, GError **error);

/* Removes key; returns TRUE if it was present. */
gboolean nf_ubootenv_unset(NfUbootEnv *env, const char *key);

/* Keys in block order, NULL-terminated; free with g_strfreev. */
char **nf_ubootenv_keys(const NfUbootEnv *env);

gsize nf_ubootenv_get_size(const NfUbootEnv *env);

void nf_ubootenv_free(NfUbootEnv *env);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(NfUbootEnv, nf_ubootenv_free)

/* Reads/decodes the block at `offset` of a plain file (raw image or env.bin).
 * A file too short for the block is _INVALID; I/O errors are G_FILE_ERROR. */
NfUbootEnv *nf_ubootenv_load_file(const char *path, goffset offset, gsize size, GError **error);

/* Encodes and writes the block at `offset` of an existing plain file, in place
 * (no truncation). Not atomic: meant for building test images and raw disks. */
gboolean nf_ubootenv_save_file(const NfUbootEnv *env, const char *path, goffset offset,
                               GError **error);

/* The CRC32 (IEEE 802.3, as zlib's crc32()) U-Boot uses. */
guint32 nf_ubootenv_crc32(const guint8 *data, gsize len);
