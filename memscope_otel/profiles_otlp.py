"""OTLP profiles: memscope's profiles as ``opentelemetry-proto``'s ``profiles/v1development``
messages, sent to a Collector over gRPC (``ProfilesService/Export``) or HTTP
(``POST /v1development/profiles``).

No Python exporter for this signal exists yet, so this module holds the three parts one would
have: a neutral profile (:class:`Profile`: samples of stacks with one value each), its encoding
(one ``ExportProfilesServiceRequest`` whose profiles share one dictionary of strings, functions,
locations and stacks), and the transport, configured by the standard ``OTEL_EXPORTER_OTLP_*``
variables with ``PROFILES`` variants taking precedence, as the metrics exporters read theirs.

The Collector accepts the signal behind a feature gate (``--feature-gates=service.profilesSupport``,
see ``collector-config.yaml``).
"""
from __future__ import annotations

import gzip
import logging
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

HTTP_PATH = "/v1development/profiles"
DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
PROTOCOLS = ("grpc", "http/protobuf")
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Frame:
    """One frame of a stack: the function's qualified name, its file and the line."""

    function: str
    file: str
    line: int


@dataclass
class Profile:
    """Samples of one value type: ``samples`` maps a stack (innermost frame first) to its value
    (an estimate, rounded to an integer as pprof and OTLP values are)."""

    sample_type: str
    unit: str
    samples: dict[tuple[Frame, ...], int]
    time_unix_nano: int
    duration_nano: int = 0
    period_type: tuple[str, str] | None = None
    period: int = 0


# ---------------------------------------------------------------------------------------- encoding


class _Dictionary:
    """The request's shared tables. Index 0 of every table is the zero value, as the format
    requires (a reference 0 means "none")."""

    def __init__(self, pb):
        self.pb = pb
        self.strings = {"": 0}
        self.functions = {}
        self.locations = {}
        self.stacks = {}
        self.table = pb.ProfilesDictionary()
        self.table.string_table.append("")
        self.table.function_table.add()
        self.table.location_table.add()
        self.table.stack_table.add()
        self.table.mapping_table.add()
        self.table.attribute_table.add()
        self.table.link_table.add()

    def string(self, text):
        index = self.strings.get(text)
        if index is None:
            index = self.strings[text] = len(self.table.string_table)
            self.table.string_table.append(text)
        return index

    def function(self, frame):
        key = (frame.function, frame.file)
        index = self.functions.get(key)
        if index is None:
            index = self.functions[key] = len(self.table.function_table)
            self.table.function_table.add(name_strindex=self.string(frame.function),
                                          system_name_strindex=self.string(frame.function),
                                          filename_strindex=self.string(frame.file))
        return index

    def location(self, frame):
        index = self.locations.get(frame)
        if index is None:
            index = self.locations[frame] = len(self.table.location_table)
            location = self.table.location_table.add()
            location.lines.add(function_index=self.function(frame), line=max(0, int(frame.line)))
        return index

    def stack(self, frames):
        index = self.stacks.get(frames)
        if index is None:
            index = self.stacks[frames] = len(self.table.stack_table)
            self.table.stack_table.add(location_indices=[self.location(f) for f in frames])
        return index


def _any_value(common, value):
    if isinstance(value, bool):
        return common.AnyValue(bool_value=value)
    if isinstance(value, int):
        return common.AnyValue(int_value=value)
    if isinstance(value, float):
        return common.AnyValue(double_value=value)
    if isinstance(value, (list, tuple)):
        return common.AnyValue(array_value=common.ArrayValue(values=[_any_value(common, v) for v in value]))
    return common.AnyValue(string_value=str(value))


def encode_request(profiles, resource_attributes, scope_name="memscope-otel", scope_version=""):
    """One ``ExportProfilesServiceRequest`` carrying ``profiles`` (a list of :class:`Profile`)
    under one resource (a mapping of attributes: the metrics' resource) and one scope."""
    from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.profiles.v1development import profiles_pb2

    dictionary = _Dictionary(profiles_pb2)
    request = profiles_service_pb2.ExportProfilesServiceRequest()
    resource_profiles = request.resource_profiles.add()
    for key, value in resource_attributes.items():
        resource_profiles.resource.attributes.add(key=key, value=_any_value(common_pb2, value))
    scope_profiles = resource_profiles.scope_profiles.add()
    scope_profiles.scope.name = scope_name
    scope_profiles.scope.version = scope_version
    for profile in profiles:
        out = scope_profiles.profiles.add(time_unix_nano=int(profile.time_unix_nano),
                                          duration_nano=int(profile.duration_nano), period=int(profile.period))
        out.sample_type.type_strindex = dictionary.string(profile.sample_type)
        out.sample_type.unit_strindex = dictionary.string(profile.unit)
        if profile.period_type is not None:
            out.period_type.type_strindex = dictionary.string(profile.period_type[0])
            out.period_type.unit_strindex = dictionary.string(profile.period_type[1])
        out.profile_id = os.urandom(16)
        for frames, value in profile.samples.items():
            if value:
                out.samples.add(stack_index=dictionary.stack(tuple(frames)), values=[int(value)])
    request.dictionary.CopyFrom(dictionary.table)
    return request


def decode_samples(request):
    """{(sample type, unit): {stack as a tuple of Frame: value}} of a request: the inverse of
    :func:`encode_request`, for tests and for reading what a receiver got."""
    table = request.dictionary
    strings = table.string_table
    out = {}
    for resource_profiles in request.resource_profiles:
        for scope_profiles in resource_profiles.scope_profiles:
            for profile in scope_profiles.profiles:
                key = (strings[profile.sample_type.type_strindex], strings[profile.sample_type.unit_strindex])
                samples = out.setdefault(key, {})
                for sample in profile.samples:
                    frames = []
                    for location_index in table.stack_table[sample.stack_index].location_indices:
                        line = table.location_table[location_index].lines[0]
                        function = table.function_table[line.function_index]
                        frames.append(Frame(strings[function.name_strindex], strings[function.filename_strindex],
                                            line.line))
                    stack = tuple(frames)
                    samples[stack] = samples.get(stack, 0) + sum(sample.values)
    return out


# --------------------------------------------------------------------------------------- transport


@dataclass
class OtlpSettings:
    """Where and how to send: from the ``OTEL_EXPORTER_OTLP_*`` variables (see :func:`from_env`)."""

    protocol: str = "grpc"
    endpoint: str = DEFAULT_GRPC_ENDPOINT
    headers: dict = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    compression: str = "none"
    insecure: bool | None = None
    certificate: str | None = None
    client_key: str | None = None
    client_certificate: str | None = None


def _variable(environ, name):
    """``OTEL_EXPORTER_OTLP_PROFILES_<name>``, else ``OTEL_EXPORTER_OTLP_<name>``: (name, value)."""
    for full in (f"OTEL_EXPORTER_OTLP_PROFILES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
        value = environ.get(full)
        if value is not None and value.strip() != "":
            return full, value.strip()
    return None, None


def _headers(name, text):
    """W3C-baggage-like ``key=value,key2=value2`` (percent-encoded), as the OTLP exporters read it."""
    headers = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            logger.warning("%s: header %r is not key=value; ignored", name, part.strip())
            continue
        headers[urllib.parse.unquote(key.strip()).lower()] = urllib.parse.unquote(value.strip())
    return headers


def from_env(environ=None):
    """The settings the standard variables give; a bad value is a warning naming the variable and
    what it accepts, and its default is used."""
    environ = os.environ if environ is None else environ
    settings = OtlpSettings()
    name, protocol = _variable(environ, "PROTOCOL")
    if protocol is not None:
        if protocol in PROTOCOLS:
            settings.protocol = protocol
        else:
            logger.warning("%s=%r is invalid (accepted: %s); using grpc", name, protocol, ", ".join(PROTOCOLS))
    specific = environ.get("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT", "").strip()
    general = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if settings.protocol == "grpc":
        settings.endpoint = specific or general or DEFAULT_GRPC_ENDPOINT
    elif specific:
        settings.endpoint = specific  # a signal's own endpoint is used as it is
    else:
        settings.endpoint = (general or DEFAULT_HTTP_ENDPOINT).rstrip("/") + HTTP_PATH
    name, headers = _variable(environ, "HEADERS")
    if headers is not None:
        settings.headers = _headers(name, headers)
    name, timeout = _variable(environ, "TIMEOUT")
    if timeout is not None:
        try:
            value = float(timeout)
            if not 0 < value <= 3_600_000:
                raise ValueError
            settings.timeout_s = value / 1000.0
        except ValueError:
            logger.warning("%s=%r is invalid (accepted: milliseconds in (0, 3600000]); using %d",
                           name, timeout, int(DEFAULT_TIMEOUT_S * 1000))
    name, compression = _variable(environ, "COMPRESSION")
    if compression is not None:
        if compression in ("gzip", "none"):
            settings.compression = compression
        else:
            logger.warning("%s=%r is invalid (accepted: gzip, none); using none", name, compression)
    name, insecure = _variable(environ, "INSECURE")
    if insecure is not None:
        if insecure.lower() in ("true", "false"):
            settings.insecure = insecure.lower() == "true"
        else:
            logger.warning("%s=%r is invalid (accepted: true, false); ignored", name, insecure)
    settings.certificate = _variable(environ, "CERTIFICATE")[1]
    settings.client_key = _variable(environ, "CLIENT_KEY")[1]
    settings.client_certificate = _variable(environ, "CLIENT_CERTIFICATE")[1]
    return settings


class ExportError(Exception):
    """An export that did not reach the receiver or that it refused (the message says which)."""


# Set in a process forked while a gRPC export of ours was still in flight (profiles_push's
# FORK_WAIT_S passed): gRPC's fork handlers were skipped, so its core state here (and in any
# process forked from here) is not safe to use.
_grpc_unusable = False


def forked_during_a_grpc_call():
    global _grpc_unusable
    _grpc_unusable = True


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class ProfilesExporter:
    """Sends requests as the settings say. ``export`` blocks for at most the timeout and raises
    :class:`ExportError` on failure; a partial success is logged at debug level."""

    def __init__(self, settings: OtlpSettings):
        self.settings = settings
        self._channel = self._stub = None

    def _grpc_stub(self):
        if self._stub is None:
            import grpc
            from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2_grpc

            s = self.settings
            parsed = urllib.parse.urlparse(s.endpoint if "://" in s.endpoint else "//" + s.endpoint)
            target = parsed.netloc or parsed.path
            insecure = s.insecure if s.insecure is not None else parsed.scheme != "https"
            if insecure:
                self._channel = grpc.insecure_channel(target)
            else:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read(s.certificate) if s.certificate else None,
                    private_key=_read(s.client_key) if s.client_key else None,
                    certificate_chain=_read(s.client_certificate) if s.client_certificate else None)
                self._channel = grpc.secure_channel(target, credentials)
            self._stub = profiles_service_pb2_grpc.ProfilesServiceStub(self._channel)
        return self._stub

    def export(self, request):
        if self.settings.protocol == "grpc":
            self._export_grpc(request)
        else:
            self._export_http(request)

    def _export_grpc(self, request):
        s = self.settings
        if _grpc_unusable:
            raise ExportError(f"gRPC export to {s.endpoint} not made: this process was forked while a gRPC export "
                              f"was in flight, which leaves gRPC unusable here (use "
                              f"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf in processes that fork)")
        import grpc

        try:
            response = self._grpc_stub().Export(
                request, timeout=s.timeout_s, metadata=list(s.headers.items()) or None,
                compression=grpc.Compression.Gzip if s.compression == "gzip" else None)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            raise ExportError(f"gRPC export to {s.endpoint} failed: {getattr(code, 'name', code)}") from None
        self._partial(response)

    def _export_http(self, request):
        from opentelemetry.proto.collector.profiles.v1development import profiles_service_pb2

        s = self.settings
        body = request.SerializeToString()
        headers = {"Content-Type": "application/x-protobuf", **s.headers}
        if s.compression == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        context = None
        if s.endpoint.startswith("https:"):
            context = ssl.create_default_context(cafile=s.certificate)
            if s.client_certificate:
                context.load_cert_chain(s.client_certificate, s.client_key)
        http_request = urllib.request.Request(s.endpoint, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(http_request, timeout=s.timeout_s, context=context) as reply:
                data = reply.read()
        except urllib.error.HTTPError as exc:
            raise ExportError(f"HTTP export to {s.endpoint} failed: status {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ExportError(f"HTTP export to {s.endpoint} failed: {getattr(exc, 'reason', exc)}") from None
        response = profiles_service_pb2.ExportProfilesServiceResponse()
        if data:
            try:
                response.ParseFromString(data)
            except Exception:  # noqa: BLE001 - a receiver's odd reply is not the application's problem
                return
        self._partial(response)

    @staticmethod
    def _partial(response):
        partial = response.partial_success
        if partial.rejected_profiles or partial.error_message:
            logger.debug("profiles export partly rejected: %d profiles (%s)", partial.rejected_profiles,
                         partial.error_message)

    def forget_connection(self):
        """In a forked child: the parent's channel is not ours to use or close (gRPC's threads did
        not survive the fork); the next export opens a new one."""
        self._channel = self._stub = None

    def close(self):
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None
