/* fuzz-manifest: Microchip manifests (JWS entries) and base64url on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"

/* A P-256 signer; nothing the fuzzer makes is signed by it, so every entry fails cleanly. */
static const char signer[] = "-----BEGIN CERTIFICATE-----\n"
			     "MIIBgDCCASegAwIBAgIUdpnPbTC2olhNsYsy33USJm3+fiIwCgYIKoZIzj0EAwIw\n"
			     "FjEUMBIGA1UEAwwLZnV6eiBzaWduZXIwHhcNMjYxMjAyMTg0MjE5WhcNMzYxMTI5\n"
			     "MTg0MjE5WjAWMRQwEgYDVQQDDAtmdXp6IHNpZ25lcjBZMBMGByqGSM49AgEGCCqG\n"
			     "SM49AwEHA0IABOzsb9ILggIjFSDHQgs4pj7EfTKxlth8SVwOkQw4TpN7CGMJIRzw\n"
			     "R1CEQgYXIssdB5CY9k5vboMA4AfoTm7n8qWjUzBRMB0GA1UdDgQWBBQj0Ix/v1Bw\n"
			     "lhS2nUujVNelkwwGyTAfBgNVHSMEGDAWgBQj0Ix/v1BwlhS2nUujVNelkwwGyTAP\n"
			     "BgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCIB6jYmO7pPCmvqXwu8Dj\n"
			     "rD8NHP+omtluUlIupR/1+01wAiBQag2rssGlqPbyMwyx5AwfpTShwtmL7RFJifSq\n"
			     "wMH44A==\n"
			     "-----END CERTIFICATE-----\n";

/* Abort on a broken promise, so the fuzzer reports it. */
static void require(int ok)
{
	if (!ok)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const serial[] = {"0123aabbccddeeff01"};
	static const char *const eui[] = {"0004A30B00100001"};
	struct manifest_options o = {
	    .signer_pem = signer,
	    .tkm_prefix = "3121",
	    .dev_eui_attr = (size && (data[0] & 1)) ? "CN" : NULL,
	    .map_serial = serial,
	    .map_dev_eui = eui,
	    .map_n = 1,
	};
	struct manifest_result res;
	int r = manifest_read((const char *)data, size, &o, &res);
	require(r == 0 || r == -22 || r == -12);
	if (r == -22)
		require(res.fatal[0] != '\0');
	for (size_t i = 0; i < res.n_errors; i++)
		require(memchr(res.errors[i].reason, '\0', sizeof(res.errors[i].reason)) != NULL);
	/* No fuzzer input carries a valid signature by the signer. */
	require(res.n_rows == 0);
	manifest_result_free(&res);

	unsigned char out[256];
	int n = manifest_b64url_decode((const char *)data, size, out, sizeof(out));
	require(n >= -22 && n <= (int)sizeof(out));
	return 0;
}
