/* admin: the io.tpad.Admin device methods — Import, Export, ListDevices and GetDevice. */
#pragma once

#include <jansson.h>

struct config;
struct req;
struct store_record;
struct tpad;

/*
 * io.tpad.Admin.Import (more): run each row through activation_run() with at most
 * `concurrency` rows in flight, retrying rows the cloud could not take yet (429 with its
 * Retry-After, 503, no session, an outcome to settle) a bounded number of times on
 * timers. Replies: progress about every 200 ms, then the summary. Calls run one at a
 * time in arrival order; a few wait, more get Busy. When the client goes away or tpad
 * stops, no new row starts and the rows in flight finish and are stored.
 */
void admin_import(struct tpad *t, struct req *r);

/*
 * io.tpad.Admin.Export (more): one reply per stored device that has an ownerToken (its
 * label), paging through the store and pausing while more than about 1 MiB of replies
 * waits for the client; then the summary. Never carries an AppKey.
 */
void admin_export(struct tpad *t, struct req *r);

/* io.tpad.Admin.ListDevices: one page of devices in DevEUI order, without AppKeys. */
void admin_list_devices(struct tpad *t, struct req *r);

/* io.tpad.Admin.GetDevice: one device, without its AppKey, its audit trail and attempts. */
void admin_get_device(struct tpad *t, struct req *r);

/*
 * io.tpad.Admin.Adopt: take a FOREIGN device's token from the cloud as ours (the admin
 * asserts the cloud's record is this device's); audited as "adopted".
 */
void admin_adopt(struct tpad *t, struct req *r);

/* The DeviceInfo object of a record, never with its AppKey. */
json_t *admin_device_info(const struct config *cfg, const struct store_record *rec);

/*
 * io.tpad.Admin.Retire(devEUI, reason): a scrapped device is deleted in the cloud by its
 * ref and becomes RETIRED, audited with the reason; Lookup and Activate then answer
 * io.tpad.Station.Retired. A lost answer to the delete is settled by the read-only query
 * (gone: done; still there: deleted once more), never guessed. In retire.c.
 */
void admin_retire(struct tpad *t, struct req *r);
/*
 * io.tpad.Admin.Print: one device (devEUI) or every device of a state as one print job
 * (admin_print.c); each device's print audited. Replies {printer, job, state, labels} or
 * PrintFailed{printer, reason, job?}.
 */
void admin_print(struct tpad *t, struct req *r);
