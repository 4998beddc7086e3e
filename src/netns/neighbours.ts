// The MAC behind an address, from a namespace's neighbour (ARP) table: what the kernel learnt when it
// answered the caller. Read from /proc/thread-self/net/arp inside the namespace (withNetns: the file
// shows the reading thread's namespace), a synchronous read of a small file, no process, no socket.
import { readFileSync } from 'node:fs';
import { withNetns } from './addon.ts';

/** /proc/net/arp's ATF_COM: the entry is resolved (an incomplete one shows 00:00:00:00:00:00). */
const ATF_COM = 0x2;

/** The MAC of `ip` in the text of /proc/net/arp, when its entry is resolved; else undefined. */
export function macInArpTable(text: string, ip: string): string | undefined {
  for (const line of text.split('\n').slice(1)) {
    const [address, , flags, mac] = line.trim().split(/\s+/);
    if (address !== ip || mac === undefined) continue;
    if ((Number(flags) & ATF_COM) === 0) return undefined;
    return mac.toLowerCase();
  }
  return undefined;
}

/** The MAC of `ip` in namespace `netns`'s neighbour table; undefined when it has none (or cannot be read). */
export function neighbourMac(netns: string, ip: string): string | undefined {
  try {
    return macInArpTable(
      withNetns(netns, () => readFileSync('/proc/thread-self/net/arp', 'utf8')),
      ip,
    );
  } catch {
    return undefined;
  }
}
