"""varlink_idl: parse varlink interface descriptions and check JSON values against them."""

import re

TOKEN = re.compile(r"\s*(->|\[string\]|\[\]|[()?:,]|[A-Za-z_][A-Za-z0-9_.]*)")


class IdlError(Exception):
    pass


class Interface:
    """One parsed interface: name, types, methods (name -> (in, out)) and errors."""

    def __init__(self, text):
        self.types, self.methods, self.errors = {}, {}, {}
        self.tokens = self._lex(text)
        self.pos = 0
        self._expect("interface")
        self.name = self._next()
        while self.pos < len(self.tokens):
            kw = self._next()
            name = self._next()
            if kw == "type":
                self.types[name] = self._type()
            elif kw == "method":
                args = self._struct()
                self._expect("->")
                self.methods[name] = (args, self._struct())
            elif kw == "error":
                self.errors[name] = self._struct()
            else:
                raise IdlError(f"unexpected {kw!r}")

    @staticmethod
    def _lex(text):
        text = re.sub(r"#[^\n]*", "", text)
        out, pos = [], 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = TOKEN.match(text, pos)
            if not m:
                raise IdlError(f"cannot read {text[pos:pos + 20]!r}")
            out.append(m.group(1))
            pos = m.end()
        return out

    def _next(self):
        if self.pos >= len(self.tokens):
            raise IdlError("unexpected end")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def _peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _expect(self, t):
        got = self._next()
        if got != t:
            raise IdlError(f"expected {t!r}, got {got!r}")

    def _struct(self):
        """'(' [name ':' type {',' name ':' type}] ')' -> ('struct', {name: type}), or an enum."""
        self._expect("(")
        fields = {}
        names = []
        while self._peek() != ")":
            name = self._next()
            if self._peek() == ":":
                self._next()
                fields[name] = self._type()
            else:
                names.append(name)
            if self._peek() == ",":
                self._next()
        self._next()
        if names:
            return ("enum", names)
        return ("struct", fields)

    def _type(self):
        t = self._peek()
        if t == "?":
            self._next()
            return ("maybe", self._type())
        if t == "[]":
            self._next()
            return ("array", self._type())
        if t == "[string]":
            self._next()
            return ("map", self._type())
        if t == "(":
            return self._struct()
        self._next()
        return ("name", t)

    def check(self, value, typ, where="", strict=True):
        """Raise IdlError if value does not fit typ (extra struct fields refused if strict)."""
        kind, arg = typ
        if kind == "maybe":
            if value is None:
                return
            return self.check(value, arg, where, strict)
        if value is None:
            raise IdlError(f"{where or 'value'}: null where {self.show(typ)} is required")
        if kind == "array":
            if not isinstance(value, list):
                raise IdlError(f"{where}: not an array")
            for i, v in enumerate(value):
                self.check(v, arg, f"{where}[{i}]", strict)
        elif kind == "map":
            if not isinstance(value, dict):
                raise IdlError(f"{where}: not an object")
            for k, v in value.items():
                self.check(v, arg, f"{where}[{k}]", strict)
        elif kind == "enum":
            if value not in arg:
                raise IdlError(f"{where}: {value!r} not one of {arg}")
        elif kind == "struct":
            if not isinstance(value, dict):
                raise IdlError(f"{where}: not an object")
            for name, ftype in arg.items():
                if ftype[0] != "maybe" and value.get(name) is None:
                    raise IdlError(f"{where}.{name}: required field missing")
                if name in value:
                    self.check(value[name], ftype, f"{where}.{name}", strict)
            extra = set(value) - set(arg)
            if extra and strict:
                raise IdlError(f"{where or 'parameters'}: undeclared field(s) {sorted(extra)}")
        elif kind == "name":
            self._check_named(value, arg, where, strict)

    def _check_named(self, value, name, where, strict):
        if name == "string":
            ok = isinstance(value, str)
        elif name == "bool":
            ok = isinstance(value, bool)
        elif name == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif name == "float":
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif name == "object":
            ok = True
        elif name in self.types:
            return self.check(value, self.types[name], where, strict)
        else:
            raise IdlError(f"{where}: unknown type {name}")
        if not ok:
            raise IdlError(f"{where}: {value!r} is not {name}")

    def show(self, typ):
        kind, arg = typ
        return {"maybe": lambda: "?" + self.show(arg), "array": lambda: "[]" + self.show(arg),
                "map": lambda: "[string]" + self.show(arg), "name": lambda: arg,
                "enum": lambda: "enum", "struct": lambda: "struct"}[kind]()

    def uses_object(self):
        """Fields typed 'object' (untyped) anywhere in the interface, as dotted paths."""
        out = []

        def walk(t, path):
            kind, arg = t
            if kind in ("maybe", "array", "map"):
                walk(arg, path)
            elif kind == "struct":
                for n, ft in arg.items():
                    walk(ft, f"{path}.{n}")
            elif kind == "name" and arg == "object":
                out.append(path)
        for n, t in self.types.items():
            walk(t, n)
        for n, (i, o) in self.methods.items():
            walk(i, n + "()")
            walk(o, n + "->")
        for n, t in self.errors.items():
            walk(t, n)
        return out
