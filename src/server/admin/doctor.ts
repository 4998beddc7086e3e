// /v1/doctor: the path a guest's request takes, checked hop by hop from the kernel's real state
// (src/doctor/). `?vm=REF` one VM's path; `?network=NET` one network's hops; neither: every
// network's. Always 200 with the report when the subject exists (a failed hop is an answer, not an
// error); 404 for an unknown VM or network.
import { z } from 'zod';
import { doctorAll, doctorNetwork, doctorVm, type DoctorReport } from '../../doctor/doctor.ts';
import { ImdsError } from '../../errors.ts';
import type { Vm } from '../../model/schema.ts';
import type { AdminDeps, AdminPlugin } from './deps.ts';
import { errorResponses } from './schemas.ts';
import { requireServedVm, resolveVmRef } from './vm-ref.ts';

const doctorQuery = z.object({
  vm: z.string().min(1).optional().describe('the VM: its id, host name, name, address, MAC or NET/REF'),
  network: z.string().min(1).optional().describe('the network (network-level hops only)'),
});

const hopView = z.object({
  name: z
    .string()
    .describe(
      'the hop: vm, network, bridge, bridge-port, interception, namespace, veth, addresses, neighbour, nft-table, guard, ' +
        'dhcp-server, dhcp-lease, listener, endpoint, tokens, rate-limit, requests, reads (prefixed NET/ when every network is checked)',
    ),
  ok: z.boolean(),
  detail: z.string().describe('the evidence'),
  fix: z.string().nullable().describe('what to do; null when the hop passed'),
});

const reportView = z.object({ ok: z.boolean().describe('every hop passed'), hops: z.array(hopView) });

/** The VM a reference names (id, host name, name, address, MAC or NET/REF: vm-ref.ts). */
function findVm(deps: AdminDeps, ref: string): Vm {
  const lookups = { byId: (id: string) => deps.inventory.getVm(id)?.vm, all: () => deps.inventory.vmList().map((s) => s.vm) };
  return requireServedVm(deps, resolveVmRef(ref, lookups)).vm;
}

/** Registered with the prefix /v1/doctor. */
export const doctorRoutes: AdminPlugin = (app, { deps }, done) => {
  app.get(
    '',
    {
      schema: {
        tags: ['daemon'],
        summary:
          "Check the path a guest's request takes, hop by hop, from the kernel's real state: one VM's, one network's, or every network's",
        querystring: doctorQuery,
        response: { 200: reportView, ...errorResponses },
      },
    },
    async (req): Promise<DoctorReport> => {
      const doctor = deps.doctor;
      if (doctor === undefined) throw new ImdsError('INTERNAL', 'this daemon has no doctor');
      const { vm, network } = req.query;
      if (vm !== undefined && network !== undefined)
        throw new ImdsError('VALIDATION_FAILED', 'give a VM or a network, not both', { field: 'network' });
      if (vm !== undefined) return doctorVm(doctor, deps.inventory, findVm(deps, vm));
      if (network !== undefined) return doctorNetwork(doctor, deps.inventory, network);
      return doctorAll(doctor, deps.inventory);
    },
  );
  done();
};
