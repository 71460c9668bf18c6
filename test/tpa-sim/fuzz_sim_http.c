/* Fuzz target for tpa-sim's HTTP request parser and its query and form decoders. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sim_http.h"

#define FUZZ_BODY_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t off = 0;
	/* Parse pipelined requests until the input is used up or rejected. */
	while (off < size) {
		struct http_request r = {0};
		size_t used = 0;
		int rc = http_parse_request(buf + off, size - off, FUZZ_BODY_MAX, &r, &used);
		if (rc < 0) {
			if (rc != -EAGAIN && rc != -EBADMSG && rc != -EMSGSIZE && rc != -EFBIG &&
			    rc != -ENOTSUP && rc != -ENOMEM)
				abort();
			break;
		}
		if (used == 0 || used > size - off || r.body_len > FUZZ_BODY_MAX ||
		    r.body[r.body_len] != '\0' || strlen(r.target) == 0 || r.target[0] != '/')
			abort();
		char v[64], path[HTTP_TARGET_MAX];
		(void)http_query_param(r.target, "deviceEUI", v, sizeof(v));
		if (http_target_path(r.target, path, sizeof(path)) < 0)
			abort();
		(void)http_form_param(r.body, "client_id", v, sizeof(v));
		http_request_clear(&r);
		off += used;
	}
	return 0;
}
