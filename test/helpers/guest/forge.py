# Run inside a guest namespace (python3, root): hand-built TCP segments to 169.254.169.254:80 with
# any source address, the way a guest forging the namespace's own address would send them. For each
# source port: a SYN, then a segment carrying an HTTP GET with an x-imds-probe header naming a VM
# (the ACK number is a guess: a forger never sees the SYN-ACK, which goes to the forged address).
# Two ways out of the guest, both through its eth0 and the bridge to the namespace's MAC:
#   raw     socket(AF_INET, SOCK_RAW, IPPROTO_RAW): the guest's routing picks the next hop (the
#           service address, i.e. imds0's MAC), the IP header is ours
#   packet  socket(AF_PACKET, SOCK_RAW) on eth0: the whole frame is ours, to DST_MAC
# Prints one JSON line: {"sent": segments sent, "ports": [...]}.
#   python3 forge.py raw|packet SRC_IP SRC_MAC DST_MAC VM_ID PORT...
import json
import socket
import struct
import sys
import time

mode, src_ip, src_mac, dst_mac, vm_id = sys.argv[1:6]
ports = [int(p) for p in sys.argv[6:]]
DST_IP = '169.254.169.254'


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def segment(sport: int, seq: int, ack: int, flags: int, payload: bytes, ident: int) -> bytes:
    src = socket.inet_aton(src_ip)
    dst = socket.inet_aton(DST_IP)
    tcp = struct.pack('!HHIIBBHHH', sport, 80, seq, ack, 5 << 4, flags, 64240, 0, 0) + payload
    pseudo = src + dst + struct.pack('!BBH', 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', checksum(pseudo + tcp)) + tcp[18:]
    total = 20 + len(tcp)
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, total, ident, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
    return ip + tcp


def mac(text: str) -> bytes:
    return bytes(int(b, 16) for b in text.split(':'))


if mode == 'raw':
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    send = lambda pkt: s.sendto(pkt, (DST_IP, 0))
elif mode == 'packet':
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(('eth0', 0))
    frame = mac(dst_mac) + mac(src_mac) + struct.pack('!H', 0x0800)
    send = lambda pkt: s.send(frame + pkt)
else:
    raise SystemExit('mode: raw or packet')

request = (
    'GET /openstack/latest/meta_data.json HTTP/1.1\r\n'
    'Host: 169.254.169.254\r\n'
    f'x-imds-probe: {vm_id}\r\n'
    'Connection: close\r\n\r\n'
).encode()
sent = 0
for i, port in enumerate(ports):
    isn = 0x1000 * (port + 1)
    send(segment(port, isn, 0, 0x02, b'', 0x4000 + 2 * i))  # SYN
    sent += 1
    time.sleep(0.05)
    send(segment(port, isn + 1, 1, 0x18, request, 0x4001 + 2 * i))  # PSH|ACK with the GET
    sent += 1
print(json.dumps({'sent': sent, 'ports': ports}))
