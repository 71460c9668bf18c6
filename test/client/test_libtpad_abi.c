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
	return tap_done();
}
