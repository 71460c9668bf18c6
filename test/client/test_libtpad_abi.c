/*
 * test-libtpad-abi: the public structs of tpad-client.h have the layout recorded for the
 * soname built (client/lib/meson.build's tpad_client_soversion). A station program built
 * against one soname is linked at run time to whatever library of that soname is
 * installed: a struct grown under the same soname is written past the end of the
 * program's own (its label's bytes and state read from the wrong place). Changing a
 * struct therefore means a new soname and a new line here.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "tpad-client.h"

struct abi {
	const char *soversion;
	size_t device, device_state, device_qr_len;
	size_t status, status_health;
	size_t error, label, activation;
};

/* On LP64 (x86_64, aarch64). */
static const struct abi abis[] = {
    {"0", 824, 782, 816, 392, 384, 1676, 24, 80},
    {"1", 1336, 1294, 1328, 392, 388, 1676, 24, 80},
};

/* Every field's offset and size under soname 1: a field moved, resized or retyped without
 * changing a struct's size changes the layout too. */
#define FIELD(type, f, off, size)                                                                  \
	do {                                                                                       \
		CHECK_INT(offsetof(struct type, f), off);                                          \
		CHECK_INT(sizeof(((struct type *)0)->f), size);                                    \
	} while (0)

static void check_soname1_fields(void)
{
	FIELD(tpad_error, code, 0, 4);
	FIELD(tpad_error, name, 4, 128);
	FIELD(tpad_error, message, 132, 512);
	FIELD(tpad_error, parameters, 644, 1024);
	FIELD(tpad_error, sys_errno, 1668, 4);
	FIELD(tpad_error, retry_after, 1672, 4);
	FIELD(tpad_device, dev_eui, 0, 17);
	FIELD(tpad_device, join_eui, 17, 17);
	FIELD(tpad_device, profile_id, 34, 9);
	FIELD(tpad_device, serial, 43, 65);
	FIELD(tpad_device, owner_token, 108, 129);
	FIELD(tpad_device, app_key, 237, 33);
	FIELD(tpad_device, qr_text, 270, 1024);
	FIELD(tpad_device, state, 1294, 8);
	FIELD(tpad_device, source, 1302, 8);
	FIELD(tpad_device, qr_format, 1310, 8);
	FIELD(tpad_device, qr_data, 1320, 8);
	FIELD(tpad_device, qr_len, 1328, 8);
	FIELD(tpad_label, format, 0, 8);
	FIELD(tpad_label, scale, 8, 4);
	FIELD(tpad_label, margin, 12, 4);
	FIELD(tpad_label, ec_level, 16, 8);
	FIELD(tpad_activation, dev_eui, 0, 8);
	FIELD(tpad_activation, tkm_info, 8, 8);
	FIELD(tpad_activation, app_key, 16, 8);
	FIELD(tpad_activation, generate_app_key, 24, 4);
	FIELD(tpad_activation, join_eui, 32, 8);
	FIELD(tpad_activation, profile_id, 40, 8);
	FIELD(tpad_activation, serial, 48, 8);
	FIELD(tpad_activation, label, 56, 24);
	FIELD(tpad_status, version, 0, 32);
	FIELD(tpad_status, uptime, 32, 8);
	FIELD(tpad_status, upstream_state, 40, 16);
	FIELD(tpad_status, breaker, 56, 16);
	FIELD(tpad_status, sessions, 72, 4);
	FIELD(tpad_status, sessions_up, 76, 4);
	FIELD(tpad_status, queue, 80, 8);
	FIELD(tpad_status, latency_p50_ms, 88, 8);
	FIELD(tpad_status, latency_p99_ms, 96, 8);
	FIELD(tpad_status, issued, 104, 8);
	FIELD(tpad_status, pending, 112, 8);
	FIELD(tpad_status, failed, 120, 8);
	FIELD(tpad_status, store_error, 128, 256);
	FIELD(tpad_status, store_failing, 384, 4);
	FIELD(tpad_status, health, 388, 4);
	/* Since 1.1 (the typed print calls). */
	CHECK_INT(sizeof(struct tpad_print), 16);
	FIELD(tpad_print, printer, 0, 8);
	FIELD(tpad_print, copies, 8, 4);
	CHECK_INT(sizeof(struct tpad_print_status), 360);
	FIELD(tpad_print_status, printer, 0, 64);
	FIELD(tpad_print_status, job, 64, 8);
	FIELD(tpad_print_status, state, 72, 16);
	FIELD(tpad_print_status, send_ms, 88, 8);
	FIELD(tpad_print_status, printer_job, 96, 8);
	FIELD(tpad_print_status, reason, 104, 256);
}

int main(void)
{
	if (sizeof(void *) != 8 || sizeof(long) != 8) {
		printf("skipped: layouts are recorded for LP64\n");
		return 77;
	}
	const struct abi *want = NULL;
	for (size_t i = 0; i < sizeof(abis) / sizeof(abis[0]); i++)
		if (strcmp(abis[i].soversion, TPAD_CLIENT_SOVERSION) == 0)
			want = &abis[i];
	CHECK(want != NULL); /* a new soname needs its layout recorded above */
	if (!want)
		return tap_done();
	CHECK_INT(sizeof(struct tpad_device), want->device);
	CHECK_INT(offsetof(struct tpad_device, state), want->device_state);
	CHECK_INT(offsetof(struct tpad_device, qr_len), want->device_qr_len);
	CHECK_INT(sizeof(struct tpad_status), want->status);
	CHECK_INT(offsetof(struct tpad_status, health), want->status_health);
	CHECK_INT(sizeof(struct tpad_error), want->error);
	CHECK_INT(sizeof(struct tpad_label), want->label);
	CHECK_INT(sizeof(struct tpad_activation), want->activation);
	if (strcmp(TPAD_CLIENT_SOVERSION, "1") == 0)
		check_soname1_fields();
	return tap_done();
}
