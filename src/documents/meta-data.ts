// openstack/<version>/meta_data.json, field by field as Nova's InstanceMetadata._metadata_as_json
// builds it (metadata-api.md §4): the same key order, gated by version.
import { randomBytes } from 'node:crypto';
import type { InstanceFacts } from './instance.ts';
import { atLeast, type OpenStackVersion } from './versions.ts';

/** Placeholder value for random_seed, which Nova regenerates on every request. */
export const RANDOM_SEED = Symbol('random_seed');

export function metaDataFields(facts: InstanceFacts, version: OpenStackVersion): [string, unknown][] {
  const fields: [string, unknown][] = [['uuid', facts.uuid]];
  if (facts.meta !== undefined) fields.push(['meta', facts.meta]);
  if (facts.publicKeys.length > 0) {
    fields.push(['public_keys', Object.fromEntries(facts.publicKeys)]);
    fields.push(['keys', facts.publicKeys.map(([name, data]) => ({ name, type: keyType(data), data }))]);
  }
  fields.push(['hostname', facts.hostname], ['name', facts.name], ['launch_index', facts.launchIndex]);
  fields.push(['availability_zone', facts.availabilityZone]);
  if (atLeast(version, '2013-04-04')) fields.push(['random_seed', RANDOM_SEED]);
  if (atLeast(version, '2015-10-15')) fields.push(['project_id', facts.projectId]);
  if (atLeast(version, '2016-06-30')) fields.push(['devices', []]);
  if (atLeast(version, '2020-10-14')) fields.push(['dedicated_cpus', []]);
  return fields;
}

function keyType(data: string): 'ssh' | 'x509' {
  return data.startsWith('-----BEGIN CERTIFICATE-----') ? 'x509' : 'ssh';
}

/** Fresh seeds are made 64 at a time: one getrandom call for all of them instead of one each. */
const SEED_BATCH = 64;
let seeds: Buffer[] = [];

/** 512 random bytes, base64: 684 characters, like Nova's random_seed; a new one every call. */
export function randomSeed(): Buffer {
  if (seeds.length === 0) {
    const bytes = randomBytes(512 * SEED_BATCH);
    seeds = Array.from({ length: SEED_BATCH }, (_, i) => Buffer.from(bytes.subarray(i * 512, (i + 1) * 512).toString('base64'), 'latin1'));
  }
  return seeds.pop() as Buffer;
}
