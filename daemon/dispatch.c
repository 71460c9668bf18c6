/* dispatch: routes each call to its handler after the protocol checks; built-in methods. */
#include "dispatch.h"
#include "clock.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "activation.h"
#include "admin.h"
#include "config.h"
#include "cred.h"
#include "iface.h"
#include "keypool.h"
#include "layout.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "print.h"
#include "qr.h"
#include "rng.h"
#include "server.h"
#include "store_copy.h"
#include "station.h"
#include "store.h"
#include "tpa.h"
#include "tpad-build.h"
#include "tpad.h"

typedef void handler_fn(struct tpad *t, struct req *r);

static uint32_t settle_after_ms(const struct config *cfg);

struct handler {
	const char *method;
	handler_fn *fn;
};

/* org.varlink.service.GetInfo: who we are and the interfaces of this socket. */
static void h_get_info(struct tpad *t, struct req *r)
{
	unsigned sock =
	    req_peer(r)->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
	json_t *ifaces = json_array();
	for (const char *const *n = iface_names(); *n; n++)
		if (iface_sockets(*n) & sock)
			json_array_append_new(ifaces, json_string(*n));
	req_reply(r,
		  json_pack("{s:s, s:s, s:s, s:s, s:o}", "vendor", "tpad project", "product",
			    "tpad", "version", TPAD_VERSION, "url",
			    "https://github.com/tpad-project/tpad", "interfaces", ifaces),
		  false);
}

/* org.varlink.service.GetInterfaceDescription: the IDL text of one interface. */
static void h_get_interface_description(struct tpad *t, struct req *r)
{
	const char *name = json_string_value(json_object_get(req_params(r), "interface"));
	unsigned sock =
	    req_peer(r)->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
	const char *text = name ? iface_description(name) : NULL;
	if (!text || !(iface_sockets(name) & sock)) {
		req_error(r, PROTO_ERR_INTERFACE_NOT_FOUND,
			  json_pack("{s:s}", "interface", name ? name : ""));
		return;
	}
	req_reply(r, json_pack("{s:s}", "description", text), false);
}

/* io.tpad.Admin.Status: version, uptime, connections, limits hit, and the modules. */
static void h_status(struct tpad *t, struct req *r)
{
	struct server_stats st;
	server_get_stats(t->srv, &st);
	uint64_t up = (clock_now_us() - t->started_us) / 1000000u;
	json_t *o = json_pack(
	    "{s:s, s:I, s:{s:i, s:i}, s:{s:I, s:I}, s:I, s:i, s:I, s:{s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:I, s:I, s:I, s:I}}",
	    "version", TPAD_VERSION, "uptime", (json_int_t)up, "connections", "station",
	    (int)st.connections[SOCK_STATION], "admin", (int)st.connections[SOCK_ADMIN], "accepted",
	    "station", (json_int_t)st.accepted[SOCK_STATION], "admin",
	    (json_int_t)st.accepted[SOCK_ADMIN], "calls", (json_int_t)st.calls, "callsInFlight",
	    (int)st.calls_in_flight, "outputOwed", (json_int_t)st.output_owed, "limitsHit",
	    "maxClients", (json_int_t)st.hit.max_clients, "maxClientsPerUid",
	    (json_int_t)st.hit.max_clients_per_uid, "maxClientsPerProcess",
	    (json_int_t)st.hit.max_clients_per_process, "messageTimeout",
	    (json_int_t)st.hit.message_timeout, "maxOutput", (json_int_t)st.hit.max_output,
	    "maxOutputTotal", (json_int_t)st.hit.max_output_total, "maxMessage",
	    (json_int_t)st.hit.max_message, "idleTimeout", (json_int_t)st.hit.idle_timeout,
	    "maxPendingCalls", (json_int_t)st.hit.max_pending_calls, "slowReader",
	    (json_int_t)st.hit.slow_reader);
	if (!o) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	if (t->tpa)
		json_object_set_new(o, "upstream", tpa_status_json(t->tpa));
	json_object_set_new(o, "profile", json_string(config_profile_name(t->cfg->api_profile)));
	json_object_set_new(o, "appKeys",
			    t->keypool ? keypool_status_json(t->keypool)
				       : json_pack("{s:s}", "source", "local"));
	/* What tpactl import --manifest needs; the signer is a public certificate's path. */
	json_object_set_new(
	    o, "import",
	    json_pack("{s:o, s:s, s:o}", "manifestSigner",
		      t->cfg->import_manifest_signer ? json_string(t->cfg->import_manifest_signer)
						     : json_null(),
		      "tkmPrefix", t->cfg->import_tkm_prefix, "manifestDevEui",
		      t->cfg->import_manifest_dev_eui ? json_string(t->cfg->import_manifest_dev_eui)
						      : json_null()));
	if (t->store)
		json_object_set_new(o, "store", store_status_json(t->store));
	if (t->print)
		json_object_set_new(o, "printers", print_status_json(t->print));
	if (t->act) {
		struct activation_stats as;
		activation_get_stats(t->act, &as);
		json_t *a = json_pack(
		    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:i}", "live",
		    (json_int_t)as.live, "stored", (json_int_t)as.stored, "settledByQuery",
		    (json_int_t)as.settled_by_query, "reimported", (json_int_t)as.reimported,
		    "notYetTrusted", (json_int_t)as.not_yet_trusted, "foreign",
		    (json_int_t)as.foreign, "adopted", (json_int_t)as.adopted, "settleRuns",
		    (json_int_t)as.settle_runs, "unsettled", (int)t->settle_pending,
		    "settleAfterMs", (int)settle_after_ms(t->cfg), "inFlight", (int)as.in_flight);
		json_object_set_new(a, "claimWaits", json_integer((json_int_t)as.claim_waits));
		json_t *by = json_object();
		for (int i = 0; i <= ACT_RETIRED; i++)
			json_object_set_new(by, activation_outcome_name((enum act_outcome)i),
					    json_integer((json_int_t)as.outcomes[i]));
		json_object_set_new(a, "outcomes", by);
		json_object_set_new(o, "activations", a);
	}
	req_reply(r, o, false);
}

/* io.tpad.Admin.Metrics: OpenMetrics text. */
static void h_metrics(struct tpad *t, struct req *r)
{
	char *text = metrics_render(t);
	json_t *o = text ? json_pack("{s:s}", "text", text) : NULL;
	free(text);
	if (!o) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	req_reply(r, o, false);
}

static const struct handler handlers[] = {
    {"org.varlink.service.GetInfo", h_get_info},
    {"org.varlink.service.GetInterfaceDescription", h_get_interface_description},
    {"io.tpad.Admin.Status", h_status},
    {"io.tpad.Admin.Metrics", h_metrics},
    {"io.tpad.Station.Activate", station_activate},
    {"io.tpad.Station.Lookup", station_lookup},
    {"io.tpad.Admin.Import", admin_import},
    {"io.tpad.Admin.Export", admin_export},
    {"io.tpad.Admin.ListDevices", admin_list_devices},
    {"io.tpad.Admin.GetDevice", admin_get_device},
    {"io.tpad.Admin.Print", admin_print},
    {"io.tpad.Admin.Adopt", admin_adopt},
    {"io.tpad.Admin.Retire", admin_retire},
};

/* The handler of a method, or NULL if it is declared but not built yet. */
static handler_fn *handler_find(const char *method)
{
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (strcmp(handlers[i].method, method) == 0)
			return handlers[i].fn;
	return NULL;
}

/* Send the error of a fault. */
static void req_fault(struct req *r, const struct proto_fault *f)
{
	req_error(r, f->error, proto_fault_parameters(f));
}

void dispatch_call(struct req *r, void *arg)
{
	struct tpad *t = arg;
	const struct peer *p = req_peer(r);
	unsigned sock = p->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
	struct call c = {.method = (char *)req_method(r),
			 .parameters = req_params(r),
			 .more = req_more(r),
			 .oneway = req_oneway(r)};
	const struct method_spec *m;
	struct proto_fault f;

	int rc = proto_check(&c, sock, &m, &f);
	if (rc == -ENOENT && strcmp(f.error, PROTO_ERR_INTERFACE_NOT_FOUND) == 0 &&
	    iface_sockets(f.parameter)) {
		/* An interface of the other socket: as far as this client knows, no such method. */
		f.error = PROTO_ERR_METHOD_NOT_FOUND;
		snprintf(f.parameter, sizeof(f.parameter), "%s", req_method(r));
		f.reason[0] = '\0';
	}
	if (rc < 0) {
		log_debug("%s: %s %s %s", req_method(r), f.error, f.parameter, f.reason);
		req_fault(r, &f);
		return;
	}
	if (p->kind == SOCK_STATION && strcmp(m->interface, "io.tpad.Station") == 0 &&
	    !station_allowed(t->cfg, p)) {
		/* The second fence behind the socket's mode: refuse, and leave a trace. */
		log_warnx("refused %s from uid %u gid %u pid %d: not in station.allowed-uids or "
			  "station.allowed-groups",
			  m->name, (unsigned)p->uid, (unsigned)p->gid, (int)p->pid);
		const char *dev = json_string_value(json_object_get(req_params(r), "devEUI"));
		if (t->store)
			store_audit(t->store, dev ? dev : "", m->name, (uint32_t)p->uid,
				    (int32_t)p->pid, "denied");
		req_error(r, "io.tpad.Station.PermissionDenied",
			  json_pack("{s:s}", "reason",
				    "this user is not allowed to call station methods"));
		return;
	}
	handler_fn *fn = handler_find(m->name);
	if (!fn) {
		req_error(r, PROTO_ERR_METHOD_NOT_IMPLEMENTED,
			  json_pack("{s:s}", "method", m->name));
		return;
	}
	fn(t, r);
}

/* The production wiring of activation: the store and the cloud. */
static int op_get(void *ctx, const char *dev_eui, struct store_record *ret)
{
	struct tpad *t = ctx;
	return t->store ? store_get(t->store, dev_eui, ret) : -ESHUTDOWN;
}

static int op_get_async(void *ctx, const char *dev_eui, store_get_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_get_async(t->store, dev_eui, cb, arg) : -ESHUTDOWN;
}

static int op_insert(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_insert(t->store, r, cb, arg) : -ESHUTDOWN;
}

static int op_update(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_update(t->store, r, cb, arg) : -ESHUTDOWN;
}

static int op_write_attempt(void *ctx, const struct store_record *r, bool insert,
			    const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_write_attempt(t->store, r, insert, a, cb, arg) : -ESHUTDOWN;
}

static int64_t op_now_ms(void *ctx)
{
	return clock_wall_ms();
}

static int op_audit(void *ctx, const char *dev_eui, const char *method, uint32_t uid, int32_t pid,
		    const char *outcome)
{
	struct tpad *t = ctx;
	return t->store ? store_audit(t->store, dev_eui, method, uid, pid, outcome) : -ESHUTDOWN;
}

static int op_import(void *ctx, const struct tpa_record *rec, tpa_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	if (!t->tpa)
		return -ESHUTDOWN;
	if (!t->keypool || !rec->app_key[0])
		return tpa_import(t->tpa, rec, cb, arg);
	/* A cloud-HSM key travels with its hsmEncryptedAppKey. */
	struct tpa_record r = *rec;
	if (keypool_hsm_key(t->keypool, rec->app_key, r.hsm_app_key) < 0)
		r.hsm_app_key[0] = '\0';
	int e = tpa_import(t->tpa, &r, cb, arg);
	cred_wipe(&r, sizeof(r));
	return e;
}

static int op_query(void *ctx, const char *dev_eui, tpa_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->tpa ? tpa_query(t->tpa, dev_eui, cb, arg) : -ESHUTDOWN;
}

static int op_list_pending(void *ctx, int (*fn)(const struct store_record *r, void *arg), void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_list(t->store, STORE_PENDING, NULL, 0, fn, arg) : -ESHUTDOWN;
}

static int op_random(void *ctx, uint8_t *buf, size_t n)
{
	struct tpad *t = ctx;
	/* Only AppKeys come from here: with cloud-hsm from the pool, never waiting for it. */
	if (t->keypool && n == 16)
		return keypool_take(t->keypool, buf);
	return rng_bytes(t->rng, buf, n);
}

/* A timer of activation (ops.later), owned here so that shutdown can drop it. */
struct later {
	struct later *next, *prev;
	struct tpad *t;
	struct event *ev;
	void (*fn)(void *arg);
	void *arg;
};

static void later_unlink(struct later *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		l->t->later = l->next;
	if (l->next)
		l->next->prev = l->prev;
	event_free(l->ev);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct later *l = arg;
	void (*fn)(void *) = l->fn;
	void *fn_arg = l->arg;
	later_unlink(l);
	free(l);
	fn(fn_arg);
}

static int op_later(void *ctx, uint32_t ms, void (*fn)(void *arg), void *arg)
{
	struct tpad *t = ctx;
	if (t->stopping)
		return -ESHUTDOWN;
	struct later *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ev = evtimer_new(t->base, on_later, l);
	if (!l->ev) {
		free(l);
		return -ENOMEM;
	}
	l->t = t;
	l->fn = fn;
	l->arg = arg;
	l->next = t->later;
	if (l->next)
		l->next->prev = l;
	t->later = l;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	evtimer_add(l->ev, &tv);
	return 0;
}

static const struct activation_ops production_ops = {
    .later = op_later,
    .get_async = op_get_async,
    .get = op_get,
    .insert = op_insert,
    .update = op_update,
    .audit = op_audit,
    .import = op_import,
    .query = op_query,
    .list_pending = op_list_pending,
    .random = op_random,
    .write_attempt = op_write_attempt,
    .now_ms = op_now_ms,
};

/* How often PENDING rows whose time has come are settled in the background. */
#define SETTLE_TICK_MS 1000

/* The settle-after in force: upstream.settle-after, or twice the request timeout. */
static uint32_t settle_after_ms(const struct config *cfg)
{
	return cfg->upstream_settle_after_ms ? cfg->upstream_settle_after_ms
					     : 2 * cfg->upstream_request_timeout_ms;
}

/* A background pass over the PENDING rows ended. */
static void on_settle_pass(unsigned still_pending, void *arg)
{
	struct tpad *t = arg;
	t->settle_pending = still_pending;
}

/* Every SETTLE_TICK_MS: settle the PENDING rows whose time has come. */
static void settle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct tpad *t = arg;
	if (!t->act || t->stopping)
		return;
	int r = activation_settle_due(t->act, t->cfg->upstream_sessions, on_settle_pass, t);
	if (r < 0 && r != -EBUSY)
		log_warn_errno(r, "cannot list PENDING devices to settle");
}

/* Start-up reconciliation finished. */
static void on_reconciled(unsigned still_pending, void *arg)
{
	struct tpad *t = arg;
	t->settle_pending = still_pending;
	if (still_pending)
		log_warnx("%u PENDING devices could not be settled with the cloud yet; they are "
			  "settled in the background with backoff",
			  still_pending);
	else
		log_info("every PENDING device is settled");
}

/* Open the store with the key from the credential or key file. */
static int open_store(struct tpad *t)
{
	const struct config *cfg = t->cfg;
	uint8_t key[STORE_KEY_LEN];
	size_t len = 0;
	char err[512];
	int r = cred_load_hex("store-key", cfg->store_key_file, key, sizeof(key), &len);
	if (r < 0) {
		char why[256];
		log_errx("cannot load the store key: %s",
			 cred_explain(r, "store-key", cfg->store_key_file, why, sizeof(why)));
		return r;
	}
	if (len != STORE_KEY_LEN) {
		cred_wipe(key, sizeof(key));
		log_errx("the store key must be %d bytes (%d hexadecimal digits), not %zu",
			 STORE_KEY_LEN, 2 * STORE_KEY_LEN, len);
		return -EINVAL;
	}
	char host[65] = "";
	if (!cfg->store_instance && gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "tpad");
	bool pg = strcmp(cfg->store_backend, "postgresql") == 0;
	char password[256] = "";
	bool has_password = false;
	if (pg) {
		r = cred_load_text("store-password", cfg->store_password_file, password,
				   sizeof(password));
		if (r == 0) {
			has_password = true;
		} else if (r != -ENOENT || cfg->store_password_file) {
			char why[256];
			cred_wipe(key, sizeof(key));
			log_errx("cannot load the store password: %s",
				 cred_explain(r, "store-password", cfg->store_password_file, why,
					      sizeof(why)));
			return r;
		}
	}
	struct store_options o = {.backend = pg ? STORE_POSTGRESQL : STORE_SQLITE,
				  .path = cfg->store_path,
				  .url = cfg->store_url,
				  .password = has_password ? password : NULL,
				  .connections = cfg->store_connections,
				  .lease_ms = cfg->store_lease_ms
						  ? cfg->store_lease_ms
						  : 2 * cfg->upstream_request_timeout_ms,
				  .instance = cfg->store_instance ? cfg->store_instance : host,
				  .key = key,
				  .key_len = len,
				  .commit_delay_ms = cfg->store_commit_delay_ms};
	r = store_open(t->base, &o, &t->store, err, sizeof(err));
	cred_wipe(key, sizeof(key));
	cred_wipe(password, sizeof(password));
	if (r < 0)
		log_errx("cannot open the store %s: %s", pg ? "(postgresql)" : cfg->store_path,
			 err);
	return r;
}

int dispatch_init(struct tpad *t)
{
	char err[512];
	int r = open_store(t);
	if (r < 0)
		return r;
	t->tpa = tpa_new(t->base, t->cfg, err, sizeof(err));
	if (!t->tpa) {
		log_errx("upstream: %s", err);
		return -EINVAL;
	}
	r = layout_new(&t->cfg->label, 0, 0, 0, t->cfg->qr_ec_level, &t->layout, err, sizeof(err));
	if (r < 0) {
		log_errx("%s", err);
		return r;
	}
	t->print = print_new(t->base, t->cfg, err, sizeof(err));
	if (!t->print) {
		log_errx("printers: %s", err);
		return -EINVAL;
	}
	t->rng = rng_new("tpad AppKey generator");
	if (t->cfg->device_app_key_source == APP_KEY_CLOUD_HSM) {
		t->keypool = keypool_new(t->base, t->cfg, t->tpa, t->store, err, sizeof(err));
		if (!t->keypool) {
			log_errx("%s", err);
			return -EINVAL;
		}
	}
	t->act = activation_new(&production_ops, t, t->cfg->device_join_eui, t->cfg->qr_profile_id);
	t->settle_ev = event_new(t->base, -1, EV_PERSIST, settle_tick, t);
	if (!t->rng || !t->act || !t->settle_ev) {
		log_errx("cannot set up activation");
		return -ENOMEM;
	}
	activation_set_settle(t->act, settle_after_ms(t->cfg), t->cfg->upstream_backoff_min_ms,
			      t->cfg->upstream_backoff_max_ms);
	struct timeval tick = {.tv_sec = SETTLE_TICK_MS / 1000,
			       .tv_usec = (SETTLE_TICK_MS % 1000) * 1000};
	event_add(t->settle_ev, &tick);
	uint64_t counts[STORE_N_STATES] = {0};
	if (store_count(t->store, counts) == 0 && counts[STORE_PENDING]) {
		log_notice("settling %llu PENDING devices with the cloud",
			   (unsigned long long)counts[STORE_PENDING]);
		r = activation_reconcile(t->act, t->cfg->upstream_sessions, on_reconciled, t);
		if (r < 0)
			log_warn_errno(r, "cannot start settling PENDING devices");
	}
	return 0;
}

void dispatch_finish(struct tpad *t)
{
	/*
	 * Order matters: without the cloud no new request can start; closing the store runs
	 * its last callbacks, which find the cloud gone; then what is left is dropped.
	 * Printers go first: a job still queued is answered while the store can audit it.
	 */
	t->print = print_free(t->print);
	t->layout = layout_free(t->layout);
	if (t->settle_ev)
		event_free(t->settle_ev);
	t->settle_ev = NULL;
	keypool_free(t->keypool);
	t->keypool = NULL;
	tpa_free(t->tpa);
	t->tpa = NULL;
	struct store *s = t->store;
	t->store = NULL;
	store_close(s);
	while (t->later) {
		struct later *l = t->later;
		later_unlink(l);
		free(l);
	}
	activation_free(t->act);
	t->act = NULL;
	rng_free(t->rng);
	t->rng = NULL;
}

/*
 * Check that a credential the configuration needs can be loaded. One that is neither in
 * $CREDENTIALS_DIRECTORY nor given by a file directive comes from systemd at run time and
 * is not checked here.
 */
static int check_credential(const char *name, const char *file, bool hex, char *err,
			    size_t errlen)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	if ((!dir || !*dir) && (!file || !*file))
		return 0;
	uint8_t buf[512];
	size_t len;
	int r = hex ? cred_load_hex(name, file, buf, sizeof(buf), &len)
		    : cred_load_text(name, file, (char *)buf, sizeof(buf));
	cred_wipe(buf, sizeof(buf));
	if (r < 0) {
		char why[256];
		snprintf(err, errlen, "%s", cred_explain(r, name, file, why, sizeof(why)));
		return r;
	}
	if (strcmp(name, "store-key") == 0 && len != STORE_KEY_LEN) {
		snprintf(err, errlen, "the store key must be %d hexadecimal digits", 2 * STORE_KEY_LEN);
		return -EINVAL;
	}
	return 0;
}

int dispatch_check_config(const struct config *cfg, char *err, size_t errlen)
{
	char why[256];
	if (cfg->qr_template && qr_template_check(cfg->qr_template, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "qr.template: %s", why);
		return -EINVAL;
	}
	/* The label and each printer's variant of it must fit a typical code and captions. */
	struct layout *l;
	int r = layout_new(&cfg->label, 0, 0, 0, cfg->qr_ec_level, &l, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "%s", why);
		return r;
	}
	layout_free(l);
	for (size_t i = 0; i < cfg->n_printers; i++) {
		const struct config_printer *p = &cfg->printers[i];
		r = layout_new(&cfg->label, p->dpi, p->width, p->height, cfg->qr_ec_level, &l, why,
			       sizeof(why));
		if (r < 0) {
			char url[128];
			snprintf(url, sizeof(url), "printer.%s.url", p->name);
			snprintf(err, errlen, "[printer.%s] (%s): %s", p->name, config_origin(cfg, url),
				 why);
			return r;
		}
		layout_free(l);
	}
	r = check_credential("store-key", cfg->store_key_file, true, err, errlen);
	if (r == 0 && strncmp(cfg->upstream_url, "https:", 6) == 0)
		r = check_credential("tpa-psk", cfg->upstream_psk_file, true, err, errlen);
	if (r == 0 && cfg->upstream_auth == UPSTREAM_AUTH_PSK_OAUTH2)
		r = check_credential("oauth-secret", cfg->oauth2_secret_file, false, err, errlen);
	/* Without a file the password is optional (libpq's passfile, client certificates). */
	if (r == 0 && strcmp(cfg->store_backend, "postgresql") == 0 && cfg->store_password_file)
		r = check_credential("store-password", cfg->store_password_file, false, err,
				     errlen);
	return r;
}

void dispatch_status_line(const struct tpad *t, char *buf, size_t len)
{
	struct server_stats st;
	server_get_stats(t->srv, &st);
	char up[384] = "upstream not set up";
	if (t->tpa)
		tpa_status_line(t->tpa, up, sizeof(up));
	uint64_t counts[STORE_N_STATES] = {0};
	struct store_stats ss = {0};
	if (t->store)
		store_stats(t->store, &ss);
	if (ss.down) {
		snprintf(buf, len, "%s; store %s down: %.120s; %u station clients", up,
			 store_backend_name(t->store), ss.last_reason, st.connections[SOCK_STATION]);
		return;
	}
	if (t->store)
		store_count(t->store, counts);
	char printers[160] = "";
	print_status_line(t->print, printers, sizeof(printers));
	snprintf(buf, len, "%s; %llu issued, %llu pending; %u station clients%s%s", up,
		 (unsigned long long)counts[STORE_ISSUED],
		 (unsigned long long)counts[STORE_PENDING], st.connections[SOCK_STATION],
		 printers[0] ? "; " : "", printers);
}

int dispatch_copy_store(const struct config *cfg, const char *url)
{
	uint8_t key[STORE_KEY_LEN];
	size_t len = 0;
	char why[256];
	int r = cred_load_hex("store-key", cfg->store_key_file, key, sizeof(key), &len);
	if (r < 0 || len != STORE_KEY_LEN) {
		log_errx("cannot load the store key: %s",
			 r < 0 ? cred_explain(r, "store-key", cfg->store_key_file, why, sizeof(why))
			       : "it must be 32 bytes (64 hexadecimal digits)");
		cred_wipe(key, sizeof(key));
		return r < 0 ? r : -EINVAL;
	}
	char password[256] = "";
	r = cred_load_text("store-password", cfg->store_password_file, password, sizeof(password));
	if (r < 0 && (r != -ENOENT || cfg->store_password_file)) {
		log_errx("cannot load the store password: %s",
			 cred_explain(r, "store-password", cfg->store_password_file, why,
				      sizeof(why)));
		cred_wipe(key, sizeof(key));
		return r;
	}
	char host[65] = "";
	if (!cfg->store_instance && gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "tpad");
	struct store_copy_options o = {.sqlite_path = cfg->store_path,
				       .url = url,
				       .password = r == 0 ? password : NULL,
				       .instance = cfg->store_instance ? cfg->store_instance : host,
				       .key = key,
				       .key_len = len};
	struct store_copy_counts n;
	char err[512] = "";
	r = store_copy_to_pg(&o, &n, err, sizeof(err));
	cred_wipe(key, sizeof(key));
	cred_wipe(password, sizeof(password));
	printf("copied %llu devices (%llu there already, %llu conflicting), %llu attempts, "
	       "%llu labels, %llu audit entries\n",
	       (unsigned long long)n.devices, (unsigned long long)n.devices_there,
	       (unsigned long long)n.conflicts, (unsigned long long)n.attempts,
	       (unsigned long long)n.labels, (unsigned long long)n.audit);
	if (r < 0) {
		log_errx("copy of %s stopped: %s (run it again to resume)", cfg->store_path, err);
		return r;
	}
	printf("verified: %llu devices, %llu attempts, %llu labels, %llu audit entries of %s are "
	       "in the database\n",
	       (unsigned long long)n.verified_devices, (unsigned long long)n.verified_attempts,
	       (unsigned long long)n.verified_labels, (unsigned long long)n.verified_audit,
	       cfg->store_path);
	if (n.conflicts) {
		log_errx("%llu devices are held by the database with another record (another "
			 "line?): not copied; see them with tpactl device on both sides",
			 (unsigned long long)n.conflicts);
		return -EEXIST;
	}
	return 0;
}
