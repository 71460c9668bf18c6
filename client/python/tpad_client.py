"""tpad_client: a Python station client for tpad, the ThingPark Activation factory daemon.

Standard library only, Python 3.9 or later. A test station activates the device it just
powered up and gets its ownerToken, its AppKey (devices without a Secure Element) and its
QR label::

    from tpad_client import Client, TpadError

    with Client() as tpad:                      # /run/tpad/station.sock
        dev = tpad.activate("0123D345666E2DBD", tkm_info="31110123D345666E2DBD",
                            qr_format="png")
        print(dev.owner_token)
        dev.save_label("0123D345666E2DBD.png")

The protocol is varlink-style: one JSON object per message on a Unix stream socket, each
message ended by a NUL byte (see tpad(8) and proto/io.tpad.Station.varlink). Error
replies are raised as exceptions: a subclass of TpadError named after the error
(InvalidParameter, NotFound, Conflict, UpstreamRejected, UpstreamUnavailable,
OutcomeUnknown, Retired, Busy, StoreFailed, PermissionDenied, PrintFailed,
MethodNotFound, ...), with the error's full name in .error and its parameters in .parameters. A socket that
cannot be reached or a link that fails raises TpadConnectionError, a ConnectionError.

The same Client speaks to tpas, the application-server side of end-to-end encryption, on
its apps socket: Client(DEFAULT_APPS_SOCKET, interface=AS), whose io.tpad.AS errors are
raised the same way (UnknownDevice, LrcFailed, Busy, ...); see example_app.py.

A Client is one connection and is not safe to share between threads without a lock.
"""

import base64
import binascii
import dataclasses
import errno
import json
import socket
from typing import Any, Dict, Iterator, Optional

__all__ = [
    "DEFAULT_STATION_SOCKET", "DEFAULT_ADMIN_SOCKET", "DEFAULT_APPS_SOCKET", "STATION", "ADMIN",
    "AS", "AS_ADMIN", "Client", "Device",
    "TpadError", "TpadConnectionError", "TpadTimeout", "TpadProtocolError",
    "InvalidParameter", "NotFound", "Conflict", "UpstreamRejected", "UpstreamUnavailable",
    "OutcomeUnknown", "Retired", "Busy", "StoreFailed", "PermissionDenied", "ExpectedMore",
    "MethodNotFound", "MethodNotImplemented", "InterfaceNotFound", "PrintFailed",
    "UnknownDevice", "CounterExhausted", "LrcFailed", "NoLrc",
]

DEFAULT_STATION_SOCKET = "/run/tpad/station.sock"
DEFAULT_ADMIN_SOCKET = "/run/tpad/admin.sock"
DEFAULT_APPS_SOCKET = "/run/tpas/apps.sock"  # tpas's, for applications
STATION = "io.tpad.Station"
ADMIN = "io.tpad.Admin"
AS = "io.tpad.AS"  # tpas: Uplinks, SendDownlink, Status
AS_ADMIN = "io.tpad.ASAdmin"
VARLINK_SERVICE = "org.varlink.service"

# Largest reply accepted; tpad's replies (a PNG label in base64) are far smaller.
MAX_REPLY = 16 * 1024 * 1024


class TpadError(Exception):
    """An error reply from tpad.

    .error is the error's full name (e.g. "io.tpad.Station.NotFound"), .parameters its
    parameters as a dict, .method the method that was called.
    """

    def __init__(self, error: str, parameters: Optional[Dict[str, Any]] = None,
                 method: Optional[str] = None):
        self.error = error
        self.parameters = dict(parameters or {})
        self.method = method
        super().__init__(self._message())

    def _message(self) -> str:
        """The error as a station logs it: a device is only its DevEUI (a PrintFailed's
        device carries the ownerToken and AppKey, which stay in .parameters), any other
        object or list "...", as libtpad-client's messages give them."""
        short = self.error.rsplit(".", 1)[-1]
        if not self.parameters:
            return short

        def shown(v: Any) -> Any:
            if isinstance(v, dict):
                return v.get("devEUI", "...")
            return "..." if isinstance(v, list) else v
        details = ", ".join(f"{k}={shown(v)}" for k, v in self.parameters.items())
        return f"{short}: {details}"


class InvalidParameter(TpadError):
    """A parameter has the wrong type or format; .parameter names it, .reason says why."""

    @property
    def parameter(self) -> Optional[str]:
        return self.parameters.get("parameter")

    @property
    def reason(self) -> Optional[str]:
        return self.parameters.get("reason")


class NotFound(TpadError):
    """The store holds no record of this device (.parameters["devEUI"])."""


class Conflict(TpadError):
    """The store holds a different record for this DevEUI; .parameters["reason"] says why."""


class UpstreamRejected(TpadError):
    """ThingPark Activation refused the device (.parameters: status, code?, message?)."""


class UpstreamUnavailable(TpadError):
    """ThingPark Activation cannot be reached now; nothing was sent, the call may be retried.

    .retry_after is the number of seconds to wait, when tpad knows it.
    """

    @property
    def retry_after(self) -> Optional[int]:
        return self.parameters.get("retryAfter")


class OutcomeUnknown(TpadError):
    """The request may have reached the cloud and its outcome is not settled yet; call again
    after .retry_after seconds (it never imports twice).
    """

    @property
    def retry_after(self) -> Optional[int]:
        return self.parameters.get("retryAfter")


class Retired(TpadError):
    """The device was retired (deleted from the cloud after it was issued): it must not be
    handed out. .reason says why it was retired.
    """

    @property
    def reason(self) -> Optional[str]:
        return self.parameters.get("reason")


class Busy(TpadError):
    """A limit of tpad was hit (queue full, too many clients); retry later."""


class StoreFailed(TpadError):
    """The store could not record the device; no token was handed out."""


class PermissionDenied(TpadError):
    """This station is not allowed to call the method (station.allowed-uids/-groups)."""


class ExpectedMore(TpadError):
    """A streaming method was called without more (use Client.call_more)."""


class PrintFailed(TpadError):
    """The label did not print (out of paper, head open, printer unreachable...), but the
    activation or lookup succeeded: .device is the committed record, token and AppKey
    included, exactly as a successful reply would carry it. Print again with
    lookup(..., print_to=...) once the printer is fixed; nothing is re-imported.

    .printer and .reason say where and why.
    """

    @property
    def printer(self) -> Optional[str]:
        return self.parameters.get("printer")

    @property
    def reason(self) -> Optional[str]:
        return self.parameters.get("reason")

    @property
    def device(self) -> Optional["Device"]:
        if not isinstance(self.parameters.get("device"), dict):
            return None
        return Device.from_reply(self.parameters)


class MethodNotFound(TpadError):
    """The method does not exist on this socket (admin methods are not on the station socket)."""


class MethodNotImplemented(TpadError):
    """This tpad does not implement the method yet."""


class InterfaceNotFound(TpadError):
    """The socket does not serve the interface."""


class UnknownDevice(TpadError):
    """tpas: no AppSKey is stored for the device (.parameters["devEUI"]): no uplink yet."""


class CounterExhausted(TpadError):
    """tpas: the device's downlink counter is used up; it must rejoin."""


class LrcFailed(TpadError):
    """tpas: the LRC refused the downlink or did not answer (or tpas, out of memory, could not
    send it: status 0); .fcnt_dn was spent all the same.

    .status is the LRC's HTTP status (0 when no answer came), .reason says why, .answer is
    the body the LRC answered with (None when it did not answer).
    """

    @property
    def fcnt_dn(self) -> Optional[int]:
        return self.parameters.get("fCntDn")

    @property
    def status(self) -> Optional[int]:
        return self.parameters.get("status")

    @property
    def reason(self) -> Optional[str]:
        return self.parameters.get("reason")

    @property
    def answer(self) -> Optional[str]:
        return self.parameters.get("answer")


class NoLrc(TpadError):
    """tpas: no LRC is configured ([lrc] url), so no downlink can be sent."""


class TpadConnectionError(ConnectionError):
    """tpad's socket cannot be reached, or the connection failed during a call.

    .path is the socket path. After this error the Client is closed.
    """

    def __init__(self, message: str, path: Optional[str] = None):
        super().__init__(message)
        self.path = path


class TpadTimeout(TpadConnectionError, TimeoutError):
    """No reply came within the Client's timeout; the connection was closed."""


class TpadProtocolError(TpadConnectionError):
    """tpad sent something that is not a valid reply; the connection was closed."""


_ERROR_CLASSES = {
    cls.__name__: cls
    for cls in (InvalidParameter, NotFound, Conflict, UpstreamRejected, UpstreamUnavailable,
                OutcomeUnknown, Retired, Busy, StoreFailed, PermissionDenied, ExpectedMore,
                MethodNotFound, MethodNotImplemented, InterfaceNotFound, PrintFailed,
                UnknownDevice, CounterExhausted, LrcFailed, NoLrc)
}
_ERROR_PREFIXES = (STATION + ".", ADMIN + ".", AS + ".", AS_ADMIN + ".", VARLINK_SERVICE + ".")


def error_from_reply(error: str, parameters: Optional[Dict[str, Any]],
                     method: Optional[str] = None) -> TpadError:
    """Build the exception for an error reply: the subclass named after the error, or TpadError."""
    cls = TpadError
    if isinstance(error, str) and error.startswith(_ERROR_PREFIXES):
        cls = _ERROR_CLASSES.get(error.rsplit(".", 1)[-1], TpadError)
    if not isinstance(parameters, dict):
        parameters = {}
    return cls(str(error), parameters, method)


@dataclasses.dataclass
class Device:
    """A device record handed out by Activate or Lookup, with its QR label if one was asked for."""

    dev_eui: str
    join_eui: str
    profile_id: str
    owner_token: str
    qr_text: str
    state: str
    source: str
    serial: Optional[str] = None
    app_key: Optional[str] = None
    qr_format: Optional[str] = None
    qr_bytes: Optional[bytes] = dataclasses.field(default=None, repr=False)
    printed: Optional[Dict[str, Any]] = None  # the reply's print: {printer, job, state, ...}
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @classmethod
    def from_reply(cls, reply: Dict[str, Any]) -> "Device":
        """Build a Device from the parameters of an Activate or Lookup reply."""
        d = reply.get("device")
        if not isinstance(d, dict):
            raise TpadProtocolError("tpad's reply has no device record")
        try:
            dev = cls(dev_eui=d["devEUI"], join_eui=d["joinEUI"], profile_id=d["profileId"],
                      owner_token=d["ownerToken"], qr_text=d["qrText"], state=d["state"],
                      source=d["source"], serial=d.get("serial"), app_key=d.get("appKey"),
                      raw=reply)
        except KeyError as e:
            raise TpadProtocolError(f"tpad's device record lacks {e.args[0]}") from None
        qr = reply.get("qr")
        if isinstance(qr, dict):
            dev.qr_format = qr.get("format")
            try:
                dev.qr_bytes = base64.b64decode(qr.get("data", ""), validate=True)
            except (binascii.Error, ValueError, TypeError):
                raise TpadProtocolError("tpad sent a QR label that is not valid base64") from None
        if isinstance(reply.get("print"), dict):
            dev.printed = reply["print"]
        return dev

    @property
    def has_app_key(self) -> bool:
        """True for a device without a Secure Element, whose AppKey must be injected."""
        return self.app_key is not None

    def save_label(self, path: str) -> None:
        """Write the QR label's bytes to path; ValueError when the call asked for no label."""
        if self.qr_bytes is None:
            raise ValueError("no QR label in this reply: pass qr_format to activate()/lookup()")
        with open(path, "wb") as f:
            f.write(self.qr_bytes)


def _qr_options(qr_format, qr_scale, qr_margin, qr_ec_level,
                qr_label=None) -> Optional[Dict[str, Any]]:
    """The qr parameter of a station call, or None when nothing was asked."""
    q = {"format": qr_format, "scale": qr_scale, "margin": qr_margin, "ecLevel": qr_ec_level,
         "label": None if qr_label is None else bool(qr_label)}
    q = {k: v for k, v in q.items() if v is not None}
    return q or None


def _print_options(print_to, print_copies) -> Optional[Dict[str, Any]]:
    """The print parameter of a station call: print_to True (the station's default
    printer) or a printer's name; None when nothing was asked."""
    if not print_to and not print_copies:
        return None
    p: Dict[str, Any] = {}
    if isinstance(print_to, str):
        p["printer"] = print_to
    if print_copies:
        p["copies"] = print_copies
    return p


class Client:
    """One connection to tpad's station socket (or, with path=DEFAULT_ADMIN_SOCKET, the admin one).

    Use it as a context manager, or call close(). timeout is in seconds and bounds
    connecting and each wait for a reply. An activation waits on the cloud, a few times
    tpad's upstream.request-timeout (30 s by default) at most: the import, then the
    queries that settle a lost answer. tpad goes on with a call whose timeout ran out:
    activate() again with the same record (never imported twice) or lookup(). interface
    is used to complete short method names given to call() ("Activate" ->
    "io.tpad.Station.Activate").
    """

    def __init__(self, path: str = DEFAULT_STATION_SOCKET, timeout: Optional[float] = 60.0,
                 interface: str = STATION):
        self.path = path
        self.timeout = timeout
        self.interface = interface
        self._buf = b""
        self._unfinished = False
        self._endless = False  # the unfinished stream is a followed Uplinks
        self._sock: Optional[socket.socket] = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise _connect_error(path, e, interface) from None
        self._sock = sock

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by close() or after a connection error)."""
        return self._sock is None

    def close(self) -> None:
        """Close the connection; closing twice is harmless."""
        sock, self._sock = getattr(self, "_sock", None), None
        if sock is not None:
            sock.close()

    def call(self, method: str, **parameters: Any) -> Dict[str, Any]:
        """Call method and return its reply parameters; an error reply raises a TpadError subclass.

        Parameters whose value is None are left out.
        """
        method = self._full_name(method)
        self._send(method, parameters, more=False)
        reply = self._recv(method)
        if reply.get("continues"):
            self._unfinished, self._endless = True, False
        return self._parameters(method, reply)

    def call_more(self, method: str, **parameters: Any) -> Iterator[Dict[str, Any]]:
        """Call method with more and yield each reply's parameters, the last one included.

        An error reply raises and ends the stream. If the caller stops early, the rest of
        the stream is read and dropped before the next call on this connection; a followed
        io.tpad.AS.Uplinks (follow not False) never ends, so the next call raises
        TpadError (tpad.client.StreamOpen) instead: close the Client and open another.
        """
        method = self._full_name(method)
        self._send(method, parameters, more=True)
        self._unfinished = True
        # A followed Uplinks never ends: left unfinished, it cannot be drained.
        self._endless = method == AS + ".Uplinks" and parameters.get("follow") is not False
        while True:
            reply = self._recv(method)
            last = not reply.get("continues")
            if last:
                self._unfinished = False
            params = self._parameters(method, reply)
            yield params
            if last:
                return

    def get_info(self) -> Dict[str, Any]:
        """org.varlink.service.GetInfo: vendor, product, version, url and interfaces."""
        return self.call(VARLINK_SERVICE + ".GetInfo")

    def get_interface_description(self, interface: str = STATION) -> str:
        """The interface description text of one of this socket's interfaces."""
        reply = self.call(VARLINK_SERVICE + ".GetInterfaceDescription", interface=interface)
        return reply.get("description", "")

    def activate(self, dev_eui: str, tkm_info: Optional[str] = None,
                 app_key: Optional[str] = None, generate_app_key: bool = False,
                 join_eui: Optional[str] = None, profile_id: Optional[str] = None,
                 serial: Optional[str] = None, qr_format: Optional[str] = None,
                 qr_scale: Optional[int] = None, qr_margin: Optional[int] = None,
                 qr_ec_level: Optional[str] = None, qr_label: Optional[bool] = None,
                 print_to: Any = None, print_copies: Optional[int] = None) -> Device:
        """io.tpad.Station.Activate: get a device's ownerToken (and AppKey, and QR label).

        Give one of tkm_info (device with a Secure Element), app_key or
        generate_app_key=True (devices without one), or none of them for a device that
        was imported before manufacturing. qr_format is "png", "svg", "zpl", "pdf", "text"
        or "none"; without any qr_* argument tpad's configured default applies. Calling again
        with the same record returns the same token. PNG and SVG labels are the
        whole label layout (captions, label size) unless qr_label=False asks for the
        bare QR code (or tpad's label.images is "code" and qr_label is not True). print_to=True prints the
        label on this station's printer once the record is committed, a string on that
        printer, print_copies copies; .printed then says which job. Raises the TpadError
        subclass of the error reply, e.g. InvalidParameter, Conflict or
        UpstreamUnavailable; a label that did not print raises PrintFailed, whose .device
        is the committed record.
        """
        reply = self.call(STATION + ".Activate", devEUI=dev_eui, joinEUI=join_eui,
                          profileId=profile_id, serial=serial, tkmInfo=tkm_info,
                          appKey=app_key, generateAppKey=True if generate_app_key else None,
                          qr=_qr_options(qr_format, qr_scale, qr_margin, qr_ec_level,
                                         qr_label),
                          print=_print_options(print_to, print_copies))
        return Device.from_reply(reply)

    def lookup(self, dev_eui: str, qr_format: Optional[str] = None,
               qr_scale: Optional[int] = None, qr_margin: Optional[int] = None,
               qr_ec_level: Optional[str] = None, qr_label: Optional[bool] = None,
               print_to: Any = None, print_copies: Optional[int] = None) -> Device:
        """io.tpad.Station.Lookup: a device from tpad's store only; NotFound when it is absent.

        print_to and print_copies as for activate(): a reprint.
        """
        reply = self.call(STATION + ".Lookup", devEUI=dev_eui,
                          qr=_qr_options(qr_format, qr_scale, qr_margin, qr_ec_level,
                                         qr_label),
                          print=_print_options(print_to, print_copies))
        return Device.from_reply(reply)

    def _full_name(self, method: str) -> str:
        """Complete a short method name with the Client's interface."""
        if not isinstance(method, str) or not method:
            raise ValueError("method must be a non-empty string")
        return method if "." in method else f"{self.interface}.{method}"

    def _parameters(self, method: str, reply: Dict[str, Any]) -> Dict[str, Any]:
        """The parameters of a reply, or raise its error."""
        if "error" in reply:
            raise error_from_reply(reply["error"], reply.get("parameters"), method)
        params = reply.get("parameters", {})
        if not isinstance(params, dict):
            self._fail(TpadProtocolError, "tpad sent reply parameters that are not an object")
        return params

    def _check_open(self) -> socket.socket:
        """The socket, or TpadConnectionError when the connection is closed."""
        if self._sock is None:
            raise TpadConnectionError(f"the connection to {self.path} is closed", self.path)
        return self._sock

    def _fail(self, cls, message: str):
        """Close the connection and raise cls(message)."""
        self.close()
        raise cls(message, self.path)

    def _send(self, method: str, parameters: Dict[str, Any], more: bool) -> None:
        """Send one call, after draining the rest of a stream the caller left unfinished."""
        sock = self._check_open()
        if self._unfinished and self._endless:
            raise TpadError("tpad.client.StreamOpen",
                            {"reason": "a followed stream is open on this connection and "
                                       "never ends: read it, or close this Client and open "
                                       "another for the call"}, method)
        while self._unfinished:
            reply = self._recv(method)
            if not reply.get("continues"):
                self._unfinished = False
        msg: Dict[str, Any] = {"method": method}
        params = {k: v for k, v in parameters.items() if v is not None}
        if params:
            msg["parameters"] = params
        if more:
            msg["more"] = True
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\0"
        try:
            sock.sendall(data)
        except socket.timeout:
            self._fail(TpadTimeout, f"timed out sending to {self.path}")
        except (BrokenPipeError, ConnectionResetError) as e:
            # The daemon closed first: one that refuses a connection at a limit writes
            # its Busy before closing, and that reply is in the socket for _recv().
            if not self._reply_waiting(sock):
                self._fail(TpadConnectionError,
                           f"cannot send to {self.path}: {e.strerror or e}")
        except OSError as e:
            self._fail(TpadConnectionError, f"cannot send to {self.path}: {e.strerror or e}")

    def _reply_waiting(self, sock: socket.socket) -> bool:
        """Read what the socket holds without waiting; whether a whole reply is there."""
        while b"\0" not in self._buf and len(self._buf) <= MAX_REPLY:
            try:
                chunk = sock.recv(65536, socket.MSG_DONTWAIT)
            except OSError:
                return False
            if not chunk:
                return False
            self._buf += chunk
        return b"\0" in self._buf

    def _recv(self, method: str) -> Dict[str, Any]:
        """Read one reply object; connection problems close the Client and raise."""
        sock = self._check_open()
        while True:
            end = self._buf.find(b"\0")
            if end >= 0:
                break
            if len(self._buf) > MAX_REPLY:
                self._fail(TpadProtocolError, f"reply from {self.path} exceeds {MAX_REPLY} bytes")
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                self._fail(TpadTimeout, f"no reply to {method} from {self.path} within "
                           f"{self.timeout} s")
            except OSError as e:
                self._fail(TpadConnectionError,
                           f"cannot read from {self.path}: {e.strerror or e}")
            if not chunk:
                self._fail(TpadConnectionError,
                           f"{_daemon(self.interface)} closed the connection during "
                           f"{method} (see its log: journalctl -u {_daemon(self.interface)})")
            self._buf += chunk
        msg, self._buf = self._buf[:end], self._buf[end + 1:]
        try:
            reply = json.loads(msg)
        except (ValueError, UnicodeDecodeError):
            self._fail(TpadProtocolError, f"tpad sent a reply that is not JSON: {msg[:80]!r}")
        if not isinstance(reply, dict):
            self._fail(TpadProtocolError, "tpad sent a reply that is not a JSON object")
        return reply


def _daemon(interface: str) -> str:
    """The daemon that serves interface: tpas for io.tpad.AS and io.tpad.ASAdmin, else tpad."""
    return "tpas" if interface.startswith(AS) else "tpad"


def _connect_error(path: str, e: OSError, interface: str = STATION) -> TpadConnectionError:
    """A connection error that says what to do about e."""
    daemon = _daemon(interface)
    if isinstance(e, socket.timeout):
        return TpadTimeout(f"cannot connect to {path}: timed out", path)
    if e.errno == errno.ENOENT:
        hint = f"the socket does not exist: is {daemon} running? (systemctl status {daemon})"
    elif e.errno in (errno.EACCES, errno.EPERM):
        role = "station" if daemon == "tpad" else "apps"
        group = f"{daemon}-admin" if path.endswith("admin.sock") else f"{daemon}-{role}"
        hint = f"permission denied: is this user in the group {group}?"
    elif e.errno == errno.ECONNREFUSED:
        hint = f"nothing listens there: {daemon} is not running (stale socket)"
    else:
        hint = e.strerror or str(e)
    return TpadConnectionError(f"cannot connect to {path}: {hint}", path)
