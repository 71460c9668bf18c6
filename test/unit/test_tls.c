/* test_tls: certificate-mode options of core/tls: pins, CA file, suites, client key rules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tap.h"
#include "tls.h"

/* Pins: base64 (with or without sha256/), hex, lists, and what is refused. */
static void test_pins(void)
{
	uint8_t p[TLS_PIN_MAX][32];
	const char *b64 = "GpSXXCaM5tb2hci01Kjk5OlfCcTHPoZRW/jEgYhTxlk=";
	CHECK_INT(tls_pins_parse(b64, p, TLS_PIN_MAX), 1);
	CHECK_INT(p[0][0], 0x1a);
	CHECK_INT(p[0][31], 0x59);
	char list[300];
	snprintf(list, sizeof(list), "sha256/%s, %s", b64,
		 "1a94975c268ce6d6f685c8b4d4a8e4e4e95f09c4c73e86515bf8c4818853c659");
	CHECK_INT(tls_pins_parse(list, p, TLS_PIN_MAX), 2);
	CHECK(memcmp(p[0], p[1], 32) == 0);
	CHECK_INT(tls_pins_parse(NULL, p, TLS_PIN_MAX), 0);
	CHECK_INT(tls_pins_parse("", p, TLS_PIN_MAX), 0);
	CHECK_INT(tls_pins_parse("nonsense", p, TLS_PIN_MAX), -EINVAL);
	CHECK_INT(tls_pins_parse("GpSXXCaM5tb2hci01Kjk5OlfCcTHPoZRW/jEgYhTxl==", p, TLS_PIN_MAX),
		  -EINVAL);
	CHECK_INT(tls_pins_parse("1a94975c268ce6d6f685c8b4d4a8e4e4e95f09c4c73e86515bf8c4818853c65g",
				 p, TLS_PIN_MAX),
		  -EINVAL);
	CHECK_INT(tls_pins_parse(list, p, 1), -EINVAL);
	CHECK_INT(tls_pins_parse(" ,\t, ", p, TLS_PIN_MAX), 0);
}

/* Configuration errors are named; a readable key file is refused with "chmod o-rwx". */
static void test_ctx_errors(const char *dir)
{
	struct tls_ctx *ctx = NULL;
	char err[512];
	struct tls_options o = {.mode = TLS_MODE_CERT, .ca_file = "/nonexistent/ca.pem"};
	CHECK(tls_ctx_new(&o, &ctx, err, sizeof(err)) < 0);
	CHECK(strstr(err, "upstream.ca-file") != NULL);

	/* The system bundle parses (Debian's ca-certificates). */
	o.ca_file = NULL;
	if (access(TLS_DEFAULT_CA_FILE, R_OK) == 0) {
		CHECK_INT(tls_ctx_new(&o, &ctx, err, sizeof(err)), 0);
		CHECK_INT(tls_ctx_mode(ctx), TLS_MODE_CERT);
		ctx = tls_ctx_free(ctx);
		/* Names split at commas and white space, however many. */
		o.ciphersuites = " ,TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256,\t "
				 "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384 ,";
		CHECK_INT(tls_ctx_new(&o, &ctx, err, sizeof(err)), 0);
		ctx = tls_ctx_free(ctx);
	}
	o.ciphersuites = " , \t,";
	CHECK(tls_ctx_new(&o, &ctx, err, sizeof(err)) < 0);
	CHECK(strstr(err, "upstream.ciphersuites: empty list") != NULL);
	o.ciphersuites = "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256 NO-SUCH-SUITE";
	CHECK(tls_ctx_new(&o, &ctx, err, sizeof(err)) < 0);
	CHECK(strstr(err, "unknown ciphersuite NO-SUCH-SUITE") != NULL);
	o.ciphersuites = "TLS-PSK-WITH-AES-128-GCM-SHA256";
	CHECK(tls_ctx_new(&o, &ctx, err, sizeof(err)) < 0);
	CHECK(strstr(err, "not an ECDHE certificate ciphersuite") != NULL);
	o.ciphersuites = NULL;
	o.pin_sha256 = "abc";
	CHECK(tls_ctx_new(&o, &ctx, err, sizeof(err)) < 0);
	CHECK(strstr(err, "upstream.pin-sha256") != NULL);
	o.pin_sha256 = NULL;

	/* A client certificate whose key file others may read. */
	char cert[512], key[512], cmd[2048];
	snprintf(cert, sizeof(cert), "%s/c.crt", dir);
	snprintf(key, sizeof(key), "%s/c.key", dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout %s "
		 "-out %s -days 2 -subj /CN=line >/dev/null 2>&1",
		 key, cert);
	if (system(cmd) != 0) {
		printf("# skip client key checks: openssl failed\n");
		return;
	}
	unsetenv("CREDENTIALS_DIRECTORY");
	o.client_cert = cert;
	o.client_key_credential = "tpa-client-key";
	o.client_key_file = key;
	chmod(key, 0644);
	CHECK(tls_ctx_new(&o, &ctx, err, sizeof(err)) < 0);
	CHECK(strstr(err, "chmod o-rwx") != NULL);
	chmod(key, 0600);
	if (access(TLS_DEFAULT_CA_FILE, R_OK) == 0) {
		CHECK_INT(tls_ctx_new(&o, &ctx, err, sizeof(err)), 0);
		ctx = tls_ctx_free(ctx);
	}
	/* A key that is not the certificate's. */
	snprintf(cmd, sizeof(cmd),
		 "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s "
		 ">/dev/null 2>&1",
		 key);
	if (system(cmd) == 0 && access(TLS_DEFAULT_CA_FILE, R_OK) == 0) {
		chmod(key, 0600);
		CHECK(tls_ctx_new(&o, &ctx, err, sizeof(err)) < 0);
		CHECK(strstr(err, "does not belong") != NULL);
	}
	unlink(cert);
	unlink(key);
}

int main(void)
{
	char dir[] = "/tmp/test-tls-XXXXXX";
	CHECK(mkdtemp(dir) != NULL);
	test_pins();
	test_ctx_errors(dir);
	CHECK_STR(tls_cert_error_name(TLS_CERT_PIN_MISMATCH), "pin-mismatch");
	rmdir(dir);
	return tap_done();
}
