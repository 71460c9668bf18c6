/* ctl_keys: tpactl keygen-rsa: a new RSA key pair for cloud-HSM AppKeys (private key 0600). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>

#include "ctl.h"

#define PEM_MAX 16000

/* Write len bytes to a new file (never over an existing one) with mode. */
static int write_new(const char *path, const unsigned char *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -errno;
	if (fchmod(fd, mode) < 0) {
		int r = -errno;
		close(fd);
		unlink(path);
		return r;
	}
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;
			close(fd);
			unlink(path);
			return r;
		}
		off += (size_t)n;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		int r = -errno;
		unlink(path);
		return r;
	}
	return 0;
}

int ctl_keygen_rsa(struct ctl *c, struct ctl_args *a)
{
	const char *path = a->argv[0];
	int bits = a->bits ? a->bits : 3072;
	if (bits != 2048 && bits != 3072 && bits != 4096) {
		fprintf(stderr, "tpactl: --bits must be 2048, 3072 or 4096\n");
		return 2;
	}
	char pub_path[4096];
	if (snprintf(pub_path, sizeof(pub_path), "%s.pub", path) >= (int)sizeof(pub_path)) {
		fprintf(stderr, "tpactl: path too long\n");
		return 2;
	}
	if (access(path, F_OK) == 0 || access(pub_path, F_OK) == 0) {
		fprintf(stderr, "tpactl: %s or %s exists; keygen-rsa never overwrites a key\n",
			path, pub_path);
		return 1;
	}
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_pk_context pk;
	unsigned char *pem = malloc(PEM_MAX);
	int status = 1, r;
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	mbedtls_pk_init(&pk);
	if (!pem ||
	    mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
				  (const unsigned char *)"tpactl keygen-rsa", 17) != 0 ||
	    mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)) != 0 ||
	    mbedtls_rsa_gen_key(mbedtls_pk_rsa(pk), mbedtls_ctr_drbg_random, &drbg, (unsigned)bits,
				65537) != 0) {
		fprintf(stderr, "tpactl: cannot generate an RSA key\n");
		goto out;
	}
	if (mbedtls_pk_write_key_pem(&pk, pem, PEM_MAX) != 0) {
		fprintf(stderr, "tpactl: cannot encode the key\n");
		goto out;
	}
	r = write_new(path, pem, strlen((char *)pem), 0600);
	if (r < 0) {
		fprintf(stderr, "tpactl: cannot write %s: %s\n", path, strerror(-r));
		goto out;
	}
	if (mbedtls_pk_write_pubkey_pem(&pk, pem, PEM_MAX) != 0 ||
	    (r = write_new(pub_path, pem, strlen((char *)pem), 0644)) < 0) {
		fprintf(stderr, "tpactl: cannot write %s\n", pub_path);
		unlink(path);
		goto out;
	}
	if (a->json) {
		json_t *o = json_pack("{s:s, s:s, s:i}", "privateKey", path, "publicKey", pub_path,
				      "bits", bits);
		if (o)
			json_dumpf(o, stdout, JSON_COMPACT);
		printf("\n");
		json_decref(o);
	} else {
		printf("%s: RSA-%d private key (mode 0600; give it to tpad as the credential "
		       "tpa-rsa-key)\n%s: its public key\n",
		       path, bits, pub_path);
	}
	status = 0;
out:
	if (pem) {
		mbedtls_platform_zeroize(pem, PEM_MAX);
		free(pem);
	}
	mbedtls_pk_free(&pk);
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&entropy);
	return status;
}
