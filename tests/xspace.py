"""A tiny real profile: an XSpace (tsl/profiler/protobuf/xplane.proto) built
by hand. xprof reads XSpace files but ships no Python module for the message,
so the few fields a trace needs are declared here by their field numbers."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto
#: message: (field, number, type, message type, repeated), as in xplane.proto.
FIELDS = {
    "XSpace": [("planes", 1, F.TYPE_MESSAGE, "XPlane", True), ("hostnames", 4, F.TYPE_STRING, None, True)],
    "XPlane": [("id", 1, F.TYPE_INT64, None, False), ("name", 2, F.TYPE_STRING, None, False),
               ("lines", 3, F.TYPE_MESSAGE, "XLine", True),
               ("event_metadata", 4, F.TYPE_MESSAGE, "XPlane.EventMetadataEntry", True)],
    "XLine": [("id", 1, F.TYPE_INT64, None, False), ("name", 2, F.TYPE_STRING, None, False),
              ("timestamp_ns", 3, F.TYPE_INT64, None, False), ("events", 4, F.TYPE_MESSAGE, "XEvent", True),
              ("duration_ps", 9, F.TYPE_INT64, None, False)],
    "XEvent": [("metadata_id", 1, F.TYPE_INT64, None, False), ("offset_ps", 2, F.TYPE_INT64, None, False),
               ("duration_ps", 3, F.TYPE_INT64, None, False)],
    "XEventMetadata": [("id", 1, F.TYPE_INT64, None, False), ("name", 2, F.TYPE_STRING, None, False)],
}


def _add_fields(message: descriptor_pb2.DescriptorProto, fields) -> None:
    for name, number, kind, type_name, repeated in fields:
        field = message.field.add(name=name, number=number, type=kind,
                                  label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
        if type_name:
            field.type_name = ".xspace." + type_name


def _xspace_class():
    """The XSpace message class, from a descriptor made here (its own pool)."""
    file = descriptor_pb2.FileDescriptorProto(name="tbr_xspace.proto", package="xspace", syntax="proto3")
    for name, fields in FIELDS.items():
        message = file.message_type.add(name=name)
        _add_fields(message, fields)
        if name == "XPlane":  # map<int64, XEventMetadata> event_metadata
            entry = message.nested_type.add(name="EventMetadataEntry")
            entry.options.map_entry = True
            _add_fields(entry, [("key", 1, F.TYPE_INT64, None, False),
                                ("value", 2, F.TYPE_MESSAGE, "XEventMetadata", False)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("xspace.XSpace"))


def tiny_xspace(host: str) -> bytes:
    """A serialized XSpace for ``host``: one CPU plane, one line, and two
    events (``matmul`` inside ``train_step``), which the trace viewer shows."""
    space = _xspace_class()(hostnames=[host])
    plane = space.planes.add(id=1, name="/host:CPU")
    for key, name in ((1, "train_step"), (2, "matmul")):
        plane.event_metadata[key].id = key
        plane.event_metadata[key].name = name
    line = plane.lines.add(id=1, name="python", timestamp_ns=1_700_000_000_000_000_000, duration_ps=3_000_000_000)
    line.events.add(metadata_id=1, offset_ps=0, duration_ps=3_000_000_000)
    line.events.add(metadata_id=2, offset_ps=1_000_000_000, duration_ps=1_000_000_000)
    return space.SerializeToString()
