"""certs: a throw-away test PKI made with the openssl command (CAs, server and client certs)."""

import base64
import hashlib
import os
import subprocess

CA_CNF = """[ca]
default_ca = test_ca
[test_ca]
database = {dir}/index.txt
new_certs_dir = {dir}/new
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
organizationName = optional
serialNumber = optional
"""


def run(*args, **kw):
    p = subprocess.run(args, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p.stdout


class PKI:
    """Certificates in one directory; every file name is returned as a path."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def key(self, name, kind="ec"):
        out = self.path(name + ".key")
        if kind == "rsa":
            run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                "-out", out)
        else:
            run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                "ec_paramgen_curve:P-256", "-out", out)
        os.chmod(out, 0o600)
        return out

    def ca(self, name):
        """A self-signed CA: returns its name (files NAME.crt, NAME.key)."""
        key = self.key(name)
        run("openssl", "req", "-x509", "-new", "-key", key, "-sha256", "-days", "30",
            "-subj", f"/CN=tpad test CA {name}", "-out", self.path(name + ".crt"),
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        d = self.path(name + ".db")
        os.makedirs(os.path.join(d, "new"), exist_ok=True)
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        with open(self.path(name + ".cnf"), "w") as f:
            f.write(CA_CNF.format(dir=d))
        return name

    def issue(self, name, ca, cn, sans=(), client=False, expired=False, subject_extra=""):
        """A certificate for cn signed by ca; returns (cert path, key path)."""
        key = self.key(name)
        csr = self.path(name + ".csr")
        run("openssl", "req", "-new", "-key", key, "-subj", f"/CN={cn}{subject_extra}",
            "-out", csr)
        ext = self.path(name + ".ext")
        with open(ext, "w") as f:
            if sans:
                f.write("subjectAltName=" + ",".join(sans) + "\n")
            f.write("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n")
            f.write(f"extendedKeyUsage={'clientAuth' if client else 'serverAuth'}\n")
        crt = self.path(name + ".crt")
        dates = (["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"]
                 if expired else ["-days", "30"])
        run("openssl", "ca", "-batch", "-config", self.path(ca + ".cnf"), "-cert",
            self.path(ca + ".crt"), "-keyfile", self.path(ca + ".key"), "-in", csr,
            "-out", crt, "-notext", "-extfile", ext, *dates)
        return crt, key

    def spki_pin(self, crt):
        """base64 SHA-256 of the certificate's SubjectPublicKeyInfo (an HPKP pin)."""
        pub = run("openssl", "x509", "-in", crt, "-noout", "-pubkey")
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                             input=pub.encode(), capture_output=True, check=True).stdout
        return base64.b64encode(hashlib.sha256(der).digest()).decode()

    def chain(self, name, *crts):
        """Concatenate PEM files into NAME.pem."""
        out = self.path(name + ".pem")
        with open(out, "w") as f:
            for c in crts:
                with open(c) as g:
                    f.write(g.read())
        return out


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def der_sig_to_raw(der):
    """An ASN.1 ECDSA-Sig-Value (SEQUENCE of two INTEGERs) as JWS R||S, 32 bytes each."""
    assert der[0] == 0x30
    i = 2 if der[1] < 0x80 else 3
    out = b""
    for _ in range(2):
        assert der[i] == 0x02
        n = der[i + 1]
        v = der[i + 2:i + 2 + n].lstrip(b"\0")
        out += v.rjust(32, b"\0")
        i += 2 + n
    return out


def jws_entry(pki, signer_key, payload, unique_id, header_uid=None):
    """One flattened-JSON JWS entry of a Microchip manifest, signed ES256 with openssl."""
    import json
    prot = b64url(json.dumps({"alg": "ES256", "kid": "tpad-test"}).encode())
    pay = b64url(json.dumps(payload).encode())
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", signer_key],
                         input=f"{prot}.{pay}".encode(), capture_output=True,
                         check=True).stdout
    return {"payload": pay, "protected": prot,
            "header": {"uniqueId": header_uid or unique_id},
            "signature": b64url(der_sig_to_raw(der))}


def cert_der_b64(crt):
    der = subprocess.run(["openssl", "x509", "-in", crt, "-outform", "DER"],
                         capture_output=True, check=True).stdout
    return base64.b64encode(der).decode()
