#!/usr/bin/python3
"""A Modbus server for rackwatch's tests, on pymodbus 3.0 (Debian python3-pymodbus).

Serves the registers of a JSON map over TCP or RTU (a serial port, e.g. one end of a socat
pty pair), 0-based addresses; an address the map does not set answers with exception 2
(illegal data address), a unit id the map does not list does not answer at all. Every request
that reaches a unit is logged as "UNIT FC ADDRESS COUNT" to --log, so that tests can count
requests. The map is read again when its file changes, so a test can move a device's state.

Map: {"units": {"1": {"holding": [ENTRY...], "input": [...], "coil": [...], "discrete": [...]}}}
ENTRY: {"address": N, "type": "uint16|int16|uint32|int32|float32|float64|string",
        "value": V, "word_order": "high_first|low_first", "count": REGS (strings)}
       or {"address": N, "raw": [u16, ...]}; coils and discrete inputs take "value": true/false.
"""

import argparse
import asyncio
import json
import os
import struct
import sys

from pymodbus.datastore import (
    ModbusServerContext,
    ModbusSlaveContext,
    ModbusSparseDataBlock,
)
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.transaction import ModbusRtuFramer

FORMATS = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i",
           "float32": ">f", "float64": ">d"}


def words(entry):
    if "raw" in entry:
        return [int(v) & 0xFFFF for v in entry["raw"]]
    typ = entry.get("type", "uint16")
    if typ == "string":
        count = int(entry["count"])
        b = entry["value"].encode("ascii")[: 2 * count].ljust(2 * count, b"\0")
        return [b[i] << 8 | b[i + 1] for i in range(0, len(b), 2)]
    value = entry["value"]
    if typ not in ("float32", "float64"):
        value = int(value)
    b = struct.pack(FORMATS[typ], value)
    regs = [b[i] << 8 | b[i + 1] for i in range(0, len(b), 2)]
    if entry.get("word_order") == "low_first":
        regs.reverse()
    return regs


class LoggingSlave(ModbusSlaveContext):
    def __init__(self, unit, log, **kw):
        super().__init__(**kw)
        self.unit, self.log = unit, log

    def validate(self, fc_as_hex, address, count=1):
        if self.log:
            self.log.write(f"{self.unit} {fc_as_hex} {address} {count}\n")
            self.log.flush()
        return super().validate(fc_as_hex, address, count)


def build(path, log, context=None):
    with open(path) as f:
        doc = json.load(f)
    slaves = {}
    for unit, tables in doc.get("units", {}).items():
        blocks = {}
        for table, key in (("holding", "hr"), ("input", "ir"), ("coil", "co"), ("discrete", "di")):
            values = {}
            for e in tables.get(table, []):
                if table in ("coil", "discrete"):
                    values[int(e["address"])] = bool(e["value"])
                    continue
                for i, w in enumerate(words(e)):
                    values[int(e["address"]) + i] = w
            blocks[key] = ModbusSparseDataBlock(values) if values else ModbusSparseDataBlock({0xFFFF: 0})
        slaves[int(unit)] = LoggingSlave(int(unit), log, zero_mode=True, **blocks)
    if context is None:
        return ModbusServerContext(slaves=slaves, single=False)
    for unit in list(context.slaves()):
        if unit not in slaves:
            del context[unit]
    for unit, s in slaves.items():
        context[unit] = s
    return context


async def watch(path, log, context):
    seen = os.stat(path).st_mtime_ns
    while True:
        await asyncio.sleep(0.1)
        try:
            m = os.stat(path).st_mtime_ns
            if m != seen:
                seen = m
                build(path, log, context)
        except (OSError, ValueError) as exc:  # a half-written map: try again next time
            print(f"reload: {exc}", file=sys.stderr)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--map", required=True)
    ap.add_argument("--log")
    ap.add_argument("--tcp", type=int)
    ap.add_argument("--rtu")
    ap.add_argument("--baud", type=int, default=9600)
    args = ap.parse_args()
    log = open(args.log, "a") if args.log else None
    context = build(args.map, log)
    asyncio.get_running_loop().create_task(watch(args.map, log, context))
    print("ready", flush=True)
    if args.tcp:
        await StartAsyncTcpServer(context=context, address=("127.0.0.1", args.tcp),
                                  ignore_missing_slaves=True)
    else:
        await StartAsyncSerialServer(context=context, framer=ModbusRtuFramer, port=args.rtu,
                                     baudrate=args.baud, ignore_missing_slaves=True)


if __name__ == "__main__":
    asyncio.run(main())
