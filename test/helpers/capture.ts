// tcpdump inside a namespace, awaited rather than slept for: `startCapture` resolves once tcpdump
// says "listening on" (the filter is attached; nothing sent after that is missed), `packets` splits
// what it printed into packets (with -v: the IP header line carries the TTL; with -A the payload
// follows as text), and `waitForPackets` resolves once the packets a test expects were printed.
import { Streamed } from './streamed-process.ts';

export interface Packet {
  /** The whole text tcpdump printed for the packet (header lines and, with -A, the payload). */
  text: string;
  /** IP TTL (needs -v). */
  ttl: number | undefined;
}

export class Capture {
  readonly proc: Streamed;

  constructor(proc: Streamed) {
    this.proc = proc;
  }

  get text(): string {
    return this.proc.stdout;
  }

  packets(): Packet[] {
    const out: Packet[] = [];
    for (const line of this.proc.stdout.split('\n')) {
      if (/^\d\d:\d\d:\d\d\.\d+ /.test(line)) out.push({ text: line, ttl: undefined });
      else if (out.length > 0) (out[out.length - 1] as Packet).text += `\n${line}`;
    }
    for (const p of out) {
      const m = /\bttl (\d+),/.exec(p.text);
      if (m) p.ttl = Number(m[1]);
    }
    return out;
  }

  /** Resolves once `enough(packets so far)` holds; rejects after timeoutMs with what was captured. */
  waitForPackets(enough: (packets: Packet[]) => boolean, timeoutMs = 15_000, what = 'the expected packets'): Promise<Packet[]> {
    return this.proc.waitFor(() => enough(this.packets()), timeoutMs, what).then(() => this.packets());
  }

  /** Stops tcpdump; returns the packets it printed. */
  async stop(): Promise<Packet[]> {
    await this.proc.stop();
    return this.packets();
  }
}

/**
 * tcpdump --immediate-mode -l -n on `iface` in the named namespace (`/run/netns/<netns>`; entered
 * with nsenter, network only), with `flags` (e.g. -v, -e, -Q in) and a filter; resolves once it is
 * listening. Stop it only once the packets a test needs were printed (`waitForPackets`), or once a
 * packet sent after them was: packets come out in capture order.
 */
export async function startCapture(
  netns: string,
  iface: string,
  flags: readonly string[],
  filter: string,
  timeoutMs = 15_000,
): Promise<Capture> {
  // --immediate-mode: each packet reaches tcpdump as it is captured. Without it packets wait in a
  // ring block for up to a second, and those of the last block are lost when tcpdump is stopped.
  const proc = new Streamed([
    'nsenter',
    `--net=/run/netns/${netns}`,
    '--',
    'tcpdump',
    '--immediate-mode',
    '-l',
    '-n',
    '-i',
    iface,
    ...flags,
    filter,
  ]);
  try {
    await proc.waitForStderr('listening on', timeoutMs);
  } catch (err) {
    await proc.stop();
    throw err;
  }
  return new Capture(proc);
}

/** One TCP segment from `tcpdump -r FILE -tt -S -n` output (absolute sequence numbers). */
export interface Segment {
  /** Capture time, epoch ms. */
  t: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
  flags: string;
  seq: number;
  /** Sequence number after its payload (= seq for a segment without one). */
  end: number;
  ack: number | undefined;
  /** The rest of the line (tcpdump's one-line decode, e.g. "HTTP: HTTP/1.1 431 …"). */
  rest: string;
}

const SEGMENT = /^(\d+\.\d+) IP ([\d.]+)\.(\d+) > ([\d.]+)\.(\d+): Flags \[([^\]]*)\], seq (\d+)(?::(\d+))?(?:, ack (\d+))?(.*)$/;

export function parseSegments(text: string): Segment[] {
  const out: Segment[] = [];
  for (const line of text.split('\n')) {
    const m = SEGMENT.exec(line);
    if (m === null) continue;
    const seq = Number(m[7]);
    out.push({
      t: Number(m[1]) * 1000,
      src: m[2] as string,
      sport: Number(m[3]),
      dst: m[4] as string,
      dport: Number(m[5]),
      flags: m[6] as string,
      seq,
      end: m[8] === undefined ? seq : Number(m[8]),
      ack: m[9] === undefined ? undefined : Number(m[9]),
      rest: m[10] as string,
    });
  }
  return out;
}
