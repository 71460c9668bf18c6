/* example_station: a minimal test station in C that activates one device with libtpad-client
 * and writes its QR label.
 *
 *   example-station DEVEUI [TKM_INFO] [--label FILE] [--socket PATH] [--serial S]
 *                   [--generate-app-key]
 *
 * Build against the installed library:
 *   cc example_station.c $(pkg-config --cflags --libs tpad-client) -o example-station
 * Exit status: 0 done, 1 tpad refused (the error is printed), 2 usage, 3 tpad cannot be
 * reached, 75 (EX_TEMPFAIL) when retrying later may work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tpad-client.h>

#define EX_TEMPFAIL 75

static int usage(void)
{
	fprintf(stderr, "usage: example-station DEVEUI [TKM_INFO] [--label FILE] [--socket PATH]\n"
			"                       [--serial S] [--generate-app-key]\n");
	return 2;
}

int main(int argc, char **argv)
{
	struct tpad_activation a = {.label = {.format = "png", .margin = -1}};
	const char *socket_path = NULL, *label = NULL;
	char default_label[32];
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--label") == 0 && i + 1 < argc)
			label = argv[++i];
		else if (strcmp(argv[i], "--socket") == 0 && i + 1 < argc)
			socket_path = argv[++i];
		else if (strcmp(argv[i], "--serial") == 0 && i + 1 < argc)
			a.serial = argv[++i];
		else if (strcmp(argv[i], "--generate-app-key") == 0)
			a.generate_app_key = 1;
		else if (argv[i][0] == '-')
			return usage();
		else if (!a.dev_eui)
			a.dev_eui = argv[i];
		else if (!a.tkm_info)
			a.tkm_info = argv[i];
		else
			return usage();
	}
	if (!a.dev_eui || (a.tkm_info && a.generate_app_key))
		return usage();
	if (!label) {
		snprintf(default_label, sizeof(default_label), "%.16s.png", a.dev_eui);
		label = default_label;
	}

	struct tpad_error err;
	tpad_client *tpad;
	if (tpad_client_open(socket_path, 60000, &tpad, &err) < 0) {
		fprintf(stderr, "station: %s\n", err.message);
		return 3;
	}
	struct tpad_device dev;
	int r = tpad_activate(tpad, &a, &dev, &err);
	tpad_client_close(tpad);
	if (r == TPAD_E_BUSY || r == TPAD_E_UPSTREAM_UNAVAILABLE || r == TPAD_E_OUTCOME_UNKNOWN) {
		fprintf(stderr, "station: %s: %s; try again later\n", err.name, err.message);
		return EX_TEMPFAIL;
	}
	if (r == TPAD_E_CONNECT || r == TPAD_E_IO || r == TPAD_E_TIMEOUT) {
		fprintf(stderr, "station: %s\n", err.message);
		return 3;
	}
	if (r < 0) {
		fprintf(stderr, "station: tpad refused %s: %s: %s\n", a.dev_eui, err.name,
			err.message);
		return 1;
	}
	FILE *f = fopen(label, "wb");
	if (!f || fwrite(dev.qr_data, 1, dev.qr_len, f) != dev.qr_len || fclose(f) != 0) {
		fprintf(stderr, "station: cannot write %s\n", label);
		tpad_device_clear(&dev);
		return 1;
	}
	printf("devEUI      %s\n", dev.dev_eui);
	printf("ownerToken  %s\n", dev.owner_token);
	if (dev.app_key[0])
		printf("appKey      %s   (inject it into the device)\n", dev.app_key);
	printf("qrText      %s\n", dev.qr_text);
	printf("state       %s (%s)\n", dev.state, dev.source);
	printf("label       %s (%zu bytes)\n", label, dev.qr_len);
	tpad_device_clear(&dev);
	return 0;
}
