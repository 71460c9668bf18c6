/* qr: the label payload — LoRa Alliance TR005 text, its CRC, and manufacturer templates. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hex.h"

#define QR_TOKEN_MAX 128      /* hex digits of an ownerToken */
#define QR_SERIAL_MAX 64      /* characters of a serial number (S field) */
#define QR_PROPRIETARY_MAX 64 /* characters of the proprietary P field */
#define QR_TEMPLATE_MAX 512   /* bytes of a qr.template, without the NUL */
#define QR_TEXT_MAX 1024      /* bytes of any payload this module makes, NUL included */

/*
 * The record fields a label is made from. EUIs (16 digits), profile_id (8 digits) and
 * owner_token (1..QR_TOKEN_MAX digits) are hex in either case and are printed upper-case.
 * profile_id NULL means "00000000". owner_token, serial and proprietary are optional:
 * NULL or "" leaves the field out.
 *
 * serial and proprietary may hold the characters 0-9 A-Z a-z $ % * + - . / (the QR
 * alphanumeric set without ':', which separates TR005 fields, and without space). In the
 * TR005 text, lower-case letters are UPPER-CASED so the whole text stays in QR
 * alphanumeric mode and every label parses back with qr_tr005_parse(); serial numbers are
 * treated as case-insensitive. A template inserts the serial as given. Any other
 * character is rejected with -EINVAL: validate serials at the protocol boundary with
 * qr_serial_valid() so a label never fails after the token was issued.
 */
struct qr_fields {
	const char *join_eui;
	const char *dev_eui;
	const char *profile_id;
	const char *owner_token;
	const char *serial;
	const char *proprietary;
};

/* A TR005 text taken apart by qr_tr005_parse(); absent optional fields are "". */
struct qr_parsed {
	char join_eui[HEX_EUI + 1];
	char dev_eui[HEX_EUI + 1];
	char profile_id[HEX_PROFILE + 1];
	char owner_token[QR_TOKEN_MAX + 1];
	char serial[QR_SERIAL_MAX + 1];
	char proprietary[QR_PROPRIETARY_MAX + 1];
	uint16_t crc;
};

/* CRC-16/MODBUS (reflected poly 0xA001, init 0xFFFF, no final XOR) of len bytes. */
uint16_t qr_crc16(const void *data, size_t len);

/* True if s is a serial (or proprietary) value qr accepts: 1..QR_SERIAL_MAX of the set above. */
bool qr_serial_valid(const char *s);

/*
 * Write the TR005 text
 * LW:D0:<JoinEUI>:<DevEUI>:<ProfileID>[:O<OwnerToken>][:S<SerNum>][:P<Proprietary>]:C<CRC>
 * to out (size outlen, NUL-terminated). Returns 0, -EINVAL for a bad field, -ENOBUFS if
 * out is too small (QR_TEXT_MAX always suffices); out is unspecified on failure.
 */
int qr_tr005(const struct qr_fields *f, char *out, size_t outlen);

/*
 * Validate a manufacturer template at configuration time: non-empty, at most
 * QR_TEMPLATE_MAX bytes of valid UTF-8 without control characters; placeholders are only
 * {devEUI} {joinEUI} {profileId} {ownerToken} {serial}; "{{" and "}}" stand for literal
 * braces; every other brace is an error. Its longest possible rendering must fit in
 * QR_TEXT_MAX. Returns 0 or -EINVAL with a one-line reason in err (may be NULL).
 */
int qr_template_check(const char *tmpl, char *err, size_t errlen);

/*
 * Render a template (see qr_template_check()) with the fields of f into out (size outlen,
 * NUL-terminated). Hex fields are upper-cased; absent fields render as "". Returns 0,
 * -EINVAL for a bad template or field, -ENOBUFS if out is too small (QR_TEXT_MAX always
 * suffices for a valid template).
 */
int qr_template_render(const char *tmpl, const struct qr_fields *f, char *out, size_t outlen);

/*
 * Parse a TR005 text strictly as qr_tr005() writes it: upper-case only, fields in order
 * O, S, P, each at most once, and the checksum field :C<4 hex digits> required and last.
 * Returns 0, -EINVAL if malformed, -EBADMSG if well-formed but the checksum does not
 * match; *ret is untouched on failure.
 */
int qr_tr005_parse(const char *text, struct qr_parsed *ret);
