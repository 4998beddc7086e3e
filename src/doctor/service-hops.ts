// The daemon's side of the path (pure): the network as the daemon last built it, the listening
// socket in the namespace, and for a VM its settings (http_endpoint, http_tokens), the rate limit
// and its requests as the daemon recorded them (src/contact.ts).
import type { Vm } from '../model/schema.ts';
import type { NetworkEvidence, VmEvidence } from './evidence.ts';
import { ago, fail, pass, REPAIR_FIX, type Hop } from './hop.ts';

export function vmHop(vm: Vm): Hop {
  return pass(
    'vm',
    `${vm.id}${vm.name === undefined ? '' : ` (${vm.name})`} on ${vm.network}: ${vm.ip}, ${vm.mac}, host name ${vm.hostname}`,
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
      `the listening socket is in network namespace inode ${l.socket.netnsInode}, not in ${ev.desired.netns} (${ev.namespaceInode === undefined ? 'gone' : `inode ${ev.namespaceInode}`}): the namespace was replaced`,
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
      `the VM's last request (${ago(contact.lastSeen, now)}) was refused 401: http_tokens ${mode}; ${mode === 'required' ? 'it asked the EC2 tree without a session token, or with an invalid one' : "it sent a session token that is invalid for it (expired, another VM's, or from before imds token rotate-key)"}`,
      mode === 'required'
        ? `use a client that gets a session token first (PUT /latest/api/token), or allow IMDSv1: imds vm set ${vm.id} --http-tokens optional`
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

export function rateLimitHop(vmEv: VmEvidence): Hop {
  const { contact, now, rateLimit } = vmEv;
  if (rateLimit.perSecond <= 0) return pass('rate-limit', 'off (rate_limit_per_second: 0)');
  const limits = `rate_limit_burst ${rateLimit.burst}, then rate_limit_per_second ${rateLimit.perSecond}`;
  if (contact?.lastStatus === 429) {
    return fail(
      'rate-limit',
      `the VM's last request (${ago(contact.lastSeen, now)}) was refused 429: it asked faster than ${limits}`,
      'find what in the guest asks in a loop; it is served again once it slows down (Retry-After says when). Raise rate_limit_burst / rate_limit_per_second if a legitimate client needs more',
    );
  }
  return pass('rate-limit', `not limited (${limits}; the VM's last answer was not 429)`);
}

export function requestsHop(vmEv: VmEvidence): Hop {
  const { vm, contact, now, startedAt } = vmEv;
  if (contact === undefined) {
    return fail(
      'requests',
      `no request from ${vm.ip} on ${vm.network} has reached the daemon since it started (${new Date(startedAt).toISOString()})`,
      'the first ✗ above is why; if every hop passes, the guest has not asked: from the guest, curl http://169.254.169.254/openstack — its route to 169.254.169.254 must lead onto the bridge (on-link, via the service address, or via its gateway)',
    );
  }
  if (contact.lastStatus >= 500) {
    return fail(
      'requests',
      `the VM's last request (${ago(contact.lastSeen, now)}) failed with ${contact.lastStatus}`,
      "the daemon's log has the error (an internal failure): report it",
    );
  }
  return pass(
    'requests',
    `${contact.requests} ${contact.requests === 1 ? 'request' : 'requests'} since ${new Date(contact.firstSeen).toISOString()}; the last ${ago(contact.lastSeen, now)} (${new Date(contact.lastSeen).toISOString()}), answered ${contact.lastStatus}`,
  );
}
