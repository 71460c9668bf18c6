/* label: a device record as the protocol shows it, its label text, and its QR image. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "qr_image.h"

struct config;
struct store;
struct store_record;

/* The label text of r: TR005 with its checksum, or qr.template if configured. */
int label_text(const struct config *cfg, const struct store_record *r, char *out, size_t len);

/* Digits of the ownerToken that stands in for one not issued yet (a 128-bit token). */
#define LABEL_TOKEN_SAMPLE 32

/*
 * The label text a device of these fields will get, before its ownerToken is known: as
 * label_text() with a LABEL_TOKEN_SAMPLE-digit token, so its code is as large as the real
 * one. dev_eui and join_eui may be "" (a 16-digit EUI stands in).
 */
int label_text_to_issue(const struct config *cfg, const char *dev_eui, const char *join_eui,
			const char *serial, char *out, size_t len);

struct layout;

/*
 * Image options from a call's validated "qr" object over the configured defaults.
 * *ret_want is false when no image is wanted (no object, or format "none"). layout (may
 * be NULL) draws ZPL labels, and PNG or SVG ones unless the object has label: false (or
 * has no label and label.images is "code"); without a layout they are the bare code.
 */
int label_opts(const struct config *cfg, const struct layout *layout, json_t *qr,
	       struct qr_opts *ret, bool *ret_want);

/* {format, data: base64} of text's QR image; NULL with *ret_err set on failure. */
json_t *label_image_json(const char *text, const struct qr_opts *o, int *ret_err);

/*
 * The label image of r (whose label text is text): the whole label of o->layout (ZPL, or
 * PNG and SVG with o->label), captions included, or else the bare code. PNG and SVG are
 * drawn from the QR code stored for r when one matches text and o->level, else encoded
 * now and, at the configured level for an issued device, stored for next time; the image
 * of the configured default options is stored too, under a key of the options (and for
 * the whole label, of the layout and r's caption fields), and handed out as is while the
 * key matches. store may be NULL.
 */
json_t *label_image_for(const struct config *cfg, struct store *store, const struct store_record *r,
			const char *text, const struct qr_opts *o, int *ret_err);

/*
 * Encode the label of an issued record at the configured level and queue it into the
 * store, so labels of imported devices are drawn without encoding (pre-generation).
 */
int label_precompute(const struct config *cfg, const struct layout *layout, struct store *store,
		     const struct store_record *r);

/*
 * The Device object of a record: devEUI, joinEUI, profileId, serial?, ownerToken,
 * appKey? (only if with_app_key and the device has one), qrText, state, source?; for the
 * admin side (with_app_key false) "hasAppKey" instead. NULL on ENOMEM.
 */
json_t *label_device_json(const struct config *cfg, const struct store_record *r,
			  const char *source, bool with_app_key);
