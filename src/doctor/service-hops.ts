// The daemon's side of the path (pure): the network as the daemon last built it, the listening
// socket in the namespace, and for a VM its settings (http_endpoint, http_tokens), its bucket in the
// rate limiter as it is now, and its requests as the daemon recorded them (src/contact.ts: counts
// kept across restarts, the last few requests of this run).
import type { RecentRequest } from '../contact.ts';
import type { Vm } from '../model/schema.ts';
import type { NetworkEvidence, VmEvidence } from './evidence.ts';
import { ago, count, fail, pass, REPAIR_FIX, type Hop } from './hop.ts';

/** The VM as registered; failed when its MAC is on another bridge than its network's (its NIC is on another network). */
export function vmHop(vmEv: VmEvidence): Hop {
  const { vm, elsewhere } = vmEv;
  const who = `${vm.id}${vm.name === undefined ? '' : ` (${vm.name})`} on ${vm.network}: ${vm.ip}, ${vm.mac}, host name ${vm.hostname}`;
  if (elsewhere === undefined) return pass('vm', who);
  const there = elsewhere.network === undefined ? 'a bridge of no imds network' : `network ${elsewhere.network}'s bridge`;
  const move =
    elsewhere.network === undefined
      ? ''
      : `; or, if the VM belongs to ${elsewhere.network}, register it there: ` +
        `imds vm set ${vm.id} --network ${elsewhere.network} --ip ADDRESS`;
  return fail(
    'vm',
    `${who}; but ${vm.mac} is on port ${elsewhere.port} of ${elsewhere.bridge} (${there}), not on ${elsewhere.own}: ` +
      'the VM is plugged into another network than the one it is registered on',
    `attach the VM's tap to ${elsewhere.own} (ip link set ${elsewhere.port} master ${elsewhere.own})${move}`,
  );
}

export function networkHop(ev: NetworkEvidence): Hop {
  const s = ev.status;
  if (s === undefined)
    return fail('network', `${ev.network.id} has not been built yet`, 'wait for the daemon to build it; its log says why if it cannot');
  if (s.state !== 'serving')
    return fail('network', `${ev.network.id} is degraded: ${s.reason ?? 'no reason given'}`, `fix what the reason names; ${REPAIR_FIX}`);
  return pass(
    'network',
    `${ev.network.id} (${ev.network.cidr}, service address ${ev.network.service_ip}) serves, as the daemon last built it`,
  );
}

export function listenerHop(ev: NetworkEvidence): Hop {
  const l = ev.listener;
  const port = ev.listenPort;
  if (!l.open)
    return fail(
      'listener',
      `the daemon holds no listening socket for ${ev.network.id}: it does not serve the network`,
      'see the network hop',
    );
  if (l.socket === undefined)
    return fail(
      'listener',
      `socket fd ${l.fd ?? '?'} could not be examined: ${l.error ?? 'unknown error'}`,
      'restart the daemon (imds restart, or systemctl restart imds)',
    );
  if (!l.socket.tcp || !l.socket.listening || l.socket.port !== port) {
    return fail(
      'listener',
      `socket fd ${l.fd ?? '?'} is not a TCP listener on port ${port} (port ${l.socket.port})`,
      'restart the daemon (imds restart, or systemctl restart imds)',
    );
  }
  if (l.socket.netnsInode !== ev.namespaceInode) {
    return fail(
      'listener',
      `the listening socket is in network namespace inode ${l.socket.netnsInode}, not in ${ev.desired.netns} ` +
        `(${ev.namespaceInode === undefined ? 'gone' : `inode ${ev.namespaceInode}`}): the namespace was replaced`,
      REPAIR_FIX,
    );
  }
  return pass('listener', `TCP socket listening on 0.0.0.0:${port} in ${ev.desired.netns}`);
}

export function endpointHop(vm: Vm): Hop {
  if (vm.http_endpoint === 'disabled') {
    return fail(
      'endpoint',
      'http_endpoint is disabled: every metadata request of the VM is refused with 403',
      `imds vm set ${vm.id} --http-endpoint enabled`,
    );
  }
  return pass('endpoint', `http_endpoint ${vm.http_endpoint ?? 'enabled'}`);
}

export function tokensHop(vmEv: VmEvidence): Hop {
  const { vm, contact, now } = vmEv;
  const mode = vm.http_tokens ?? 'optional';
  if (contact?.lastStatus === 401) {
    return fail(
      'tokens',
      `the VM's last request (${ago(contact.lastSeen, now)}) was refused 401: http_tokens ${mode}; ` +
        (mode === 'required'
          ? 'it asked the EC2 tree without a session token, or with an invalid one'
          : "it sent a session token that is invalid for it (expired, another VM's, or from before imds token rotate-key)"),
      mode === 'required'
        ? 'use a client that gets a session token first (PUT /latest/api/token), ' +
            `or allow IMDSv1: imds vm set ${vm.id} --http-tokens optional`
        : 'the client must fetch a new token (PUT /latest/api/token)',
    );
  }
  return pass(
    'tokens',
    mode === 'required'
      ? 'http_tokens required: the EC2 tree needs a session token (IMDSv2)'
      : 'http_tokens optional: IMDSv1 and IMDSv2 both served',
  );
}

/** A bucket's tokens for a detail: `3.2`, `0`. */
const tokensText = (t: number): string => (t >= 10 ? String(Math.floor(t)) : String(Math.floor(t * 10) / 10));

export function rateLimitHop(vmEv: VmEvidence): Hop {
  const { vm, contact, now, rateLimit, bucket } = vmEv;
  if (rateLimit.perSecond <= 0 || bucket === 'off') return pass('rate-limit', 'off (rate_limit_per_second: 0)');
  const limits = `rate_limit_burst ${rateLimit.burst}, then rate_limit_per_second ${rateLimit.perSecond}`;
  const slowDown =
    'find what in the guest asks in a loop; it is served again once it slows down (Retry-After says when). ' +
    'Raise rate_limit_burst / rate_limit_per_second if a legitimate client needs more';
  if (bucket === undefined) {
    // The daemon could not read its limiter: judged on the last answer, and said so.
    if (contact?.lastStatus === 429) {
      return fail(
        'rate-limit',
        `the VM's last request (${ago(contact.lastSeen, now)}) was refused 429: it asked faster than ${limits} ` +
          "(the limiter's state could not be read)",
        slowDown,
      );
    }
    return pass('rate-limit', `${limits}; the VM's last answer was not 429 (the limiter's state could not be read)`);
  }
  if (bucket === 'none')
    return pass('rate-limit', `${vm.ip} has no bucket in the limiter: it has not asked lately, its whole burst is there (${limits})`);
  const refused = bucket.refused === 0 ? 'none refused' : `${count(bucket.refused, 'request')} refused with 429 since its bucket was made`;
  const state =
    `${tokensText(bucket.tokens)} of ${rateLimit.burst} tokens left in ${vm.ip}'s bucket ` +
    `(a request takes one; ${rateLimit.perSecond} come back a second); ${refused}`;
  if (bucket.tokens < 1) {
    const wait = Math.max(1, Math.ceil((1 - bucket.tokens) / rateLimit.perSecond));
    return fail('rate-limit', `limited now: ${state}; its next request is served in ${wait} s at the earliest`, slowDown);
  }
  return pass('rate-limit', `not limited now: ${state}`);
}

/**
 * The recent requests for a detail: `15:01:02 GET /openstack 200; 15:01:03 native ×28, last 200`
 * (the native loop's answers as counted between two reads: it records no paths).
 */
function recentText(recent: readonly RecentRequest[]): string {
  if (recent.length === 0) return '';
  const items = recent.map((r) => {
    const at = new Date(r.at).toISOString().slice(11, 19);
    return r.by === 'native' ? `${at} native ×${r.requests}, last ${r.status}` : `${at} ${r.method ?? '?'} ${r.path ?? '?'} ${r.status}`;
  });
  const native = recent.some((r) => r.by === 'native') ? ' (native: answered by the native loop, which records no paths)' : '';
  return `. Recent (UTC, newest first): ${items.join('; ')}${native}`;
}

export function requestsHop(vmEv: VmEvidence): Hop {
  const { vm, contact, now, startedAt, recent } = vmEv;
  const since = new Date(startedAt).toISOString();
  const ask =
    'the first ✗ above is why; if every hop passes, the guest has not asked: from the guest, curl http://169.254.169.254/openstack — ' +
    'its route to 169.254.169.254 must lead onto the bridge (on-link, via the service address, or via its gateway)';
  if (contact === undefined) {
    return fail('requests', `no request from ${vm.ip} on ${vm.network} has ever been recorded (this daemon started ${since})`, ask);
  }
  const last = `${ago(contact.lastSeen, now)} (${new Date(contact.lastSeen).toISOString()}), answered ${contact.lastStatus}`;
  if (contact.lastStatus >= 500) {
    return fail(
      'requests',
      `the VM's last request (${ago(contact.lastSeen, now)}) failed with ${contact.lastStatus}${recentText(recent)}`,
      "the daemon's log has the error (an internal failure): report it",
    );
  }
  const total = `${count(contact.requests, 'request')} since ${new Date(contact.firstSeen).toISOString()}`;
  if (contact.lastSeen < startedAt) {
    // Kept across the restart (state_dir/contacts.json): served before, silent since (cloud-init asks at boot).
    return pass('requests', `no request since the daemon started (${since}); the last one before it was ${last}; ${total}`);
  }
  return pass('requests', `${total}; the last ${last}${recentText(recent)}`);
}
