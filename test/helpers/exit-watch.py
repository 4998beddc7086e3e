# Reports how a process that is not our child exits (a daemon's successor after `imds restart`: its
# parent, the old daemon, is gone, so nobody the test owns can wait for it). Root only: it listens
# on the kernel's process-event connector (NETLINK_CONNECTOR, CN_IDX_PROC), which tells every exit
# with its wait status. Usage: exit-watch.py PID. Prints `listening` once subscribed (the caller
# then checks that PID is still there: an exit before that is not seen), then one JSON line,
# {"pid": PID, "code": N | null, "signal": N | null}, when PID's thread group ends, and exits.
# If the kernel dropped events (the socket overran), it prints {"pid": PID, "lost": true} when PID
# is found gone, and exits 3.
import errno
import json
import os
import socket
import struct
import sys

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_EXIT = 0x80000000
SO_RCVBUFFORCE = 33

target = int(sys.argv[1])
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
try:
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
except OSError:
    pass
sock.bind((0, CN_IDX_PROC))
op = struct.pack('=I', PROC_CN_MCAST_LISTEN)
cn_msg = struct.pack('=IIIIHH', CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0) + op
sock.send(struct.pack('=IHHII', 16 + len(cn_msg), NLMSG_DONE, 0, 0, 0) + cn_msg)
print('listening', flush=True)


def gone(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] in ('Z', 'X')
    except FileNotFoundError:
        return True


while True:
    try:
        data = sock.recv(1 << 20)
    except OSError as err:
        if err.errno != errno.ENOBUFS:
            raise
        if gone(target):
            print(json.dumps({'pid': target, 'lost': True}), flush=True)
            sys.exit(3)
        continue
    off = 0
    while off + 16 <= len(data):
        (length,) = struct.unpack_from('=I', data, off)
        if length < 16:
            break
        event = data[off + 16 + 20 : off + length]  # after nlmsghdr and cn_msg
        if len(event) >= 32:
            (what,) = struct.unpack_from('=I', event, 0)
            if what == PROC_EVENT_EXIT:
                pid, tgid, status, _exit_signal = struct.unpack_from('=IIII', event, 16)
                if pid == target and tgid == target:
                    sig = status & 0x7F
                    out = {'pid': target, 'code': None if sig else (status >> 8) & 0xFF, 'signal': sig or None}
                    print(json.dumps(out), flush=True)
                    sys.exit(0)
        off += (length + 3) & ~3
