// zod schemas for the things operators declare: networks and VMs. The same schemas validate the
// YAML configuration and (later) admin API bodies, so both accept exactly the same input.
import { z } from 'zod';
import { parseCidr } from './ipv4.ts';

/** Longest network id: kernel link names derive from it and must fit in 15 bytes (`imdsb-<id>`). */
export const NETWORK_ID_MAX = 9;

/** Nova's limit: user data is at most 65535 characters once base64-encoded. */
export const USER_DATA_MAX_BASE64 = 65535;

export const networkIdSchema = z
  .string()
  .regex(
    new RegExp(`^[a-z][a-z0-9-]{0,${NETWORK_ID_MAX - 1}}$`),
    `must be a slug: 1-${NETWORK_ID_MAX} characters of a-z, 0-9 and "-", starting with a letter ` +
      `(kernel link names derive from it and are limited to 15 characters)`,
  );

export const ipv4Schema = z.ipv4('must be an IPv4 address in dotted-quad form');

export const cidrSchema = z.string().superRefine((value, ctx) => {
  const parsed = parseCidr(value);
  if (!parsed.ok) ctx.addIssue({ code: 'custom', message: `invalid CIDR "${value}": ${parsed.reason}` });
});

/** A Linux interface name: 1-15 bytes, no "/", ":" or whitespace, not "." or "..". */
export const ifnameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_.@-]{1,15}$/, 'must be a Linux interface name: 1-15 characters of A-Z a-z 0-9 _ . @ -')
  .refine((v) => v !== '.' && v !== '..', 'must not be "." or ".."');

export const macSchema = z
  .string()
  .regex(/^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$/, 'must be a MAC address like 52:54:00:12:34:56')
  .transform((v) => v.toLowerCase())
  .refine((v) => (parseInt(v.slice(0, 2), 16) & 1) === 0, 'must be a unicast MAC (the first octet must be even)')
  .refine((v) => v !== '00:00:00:00:00:00', 'must not be all zeros');

export const uuidSchema = z
  .string()
  .regex(
    /^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/,
    'must be a UUID like 1b4e28ba-2fa1-11d2-883f-0016d3cca427',
  )
  .transform((v) => v.toLowerCase());

const LABEL = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/** RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens, at most 253 characters. */
export const hostnameSchema = z
  .string()
  .max(253, 'must be at most 253 characters')
  .refine(
    (v) => v.length > 0 && v.split('.').every((label) => LABEL.test(label)),
    'must be an RFC 1123 host name: labels of 1-63 letters, digits and inner hyphens, separated by dots',
  );

/** A DNS domain appended to bare host names in meta_data.json (Nova's dhcp_domain); "" for none. */
export const domainSchema = z.union([z.literal(''), hostnameSchema]);

/** User data: a YAML string (UTF-8) or bytes (YAML `!!binary`, base64 in JSON bodies elsewhere). */
export const userDataSchema = z
  .union([z.string(), z.instanceof(Uint8Array)], 'must be a string or binary (!!binary) value')
  .transform((v) => (typeof v === 'string' ? Buffer.from(v, 'utf8') : Buffer.from(v)))
  .superRefine((buf, ctx) => {
    const encoded = Math.ceil(buf.length / 3) * 4;
    if (encoded > USER_DATA_MAX_BASE64) {
      ctx.addIssue({
        code: 'custom',
        message: `is ${buf.length} bytes, ${encoded} once base64-encoded; Nova's limit is ${USER_DATA_MAX_BASE64} base64 characters (49149 bytes)`,
      });
    }
  });

const metaValue = z.string().max(255, 'metadata values are limited to 255 characters (as in Nova)');

/** Vendor data: a JSON object, served in vendor_data.json and under "static" in vendor_data2.json. */
export const vendorDataSchema = z.record(z.string(), z.json(), 'must be an object of JSON values');

export const networkSchema = z
  .object({
    id: networkIdSchema,
    cidr: cidrSchema,
    service_ip: ipv4Schema,
    gateway: ipv4Schema.optional(),
    bridge: ifnameSchema.optional(),
    uplink: ifnameSchema.optional(),
    mtu: z.number().int('must be an integer').min(68, 'must be at least 68').max(65535, 'must be at most 65535').optional(),
    domain: domainSchema.optional(),
    dhcp: z.boolean().optional().describe('VMs get their address by DHCP (network_data.json says ipv4_dhcp)'),
    dns: z.array(ipv4Schema).max(8).optional().describe('DNS servers announced to VMs'),
    ntp: z.array(ipv4Schema).max(8).optional().describe('NTP servers announced by DHCP (option 42)'),
    dhcp_lease_time: z
      .number()
      .int('must be an integer')
      .min(120, 'must be at least 120 seconds')
      .max(31_536_000, 'must be at most 31536000 seconds (a year)')
      .optional()
      .describe('DHCP lease time in seconds; default 86400'),
    vendor_data: vendorDataSchema.optional().describe("defaults for the network's VMs' vendor data"),
  })
  .strict();

export const vmSchema = z
  .object({
    id: uuidSchema,
    network: networkIdSchema,
    ip: ipv4Schema,
    mac: macSchema,
    hostname: hostnameSchema,
    name: z.string().min(1).max(255).optional(),
    user_data: userDataSchema.optional(),
    public_keys: z.record(z.string().min(1).max(255), z.string().min(1)).optional(),
    meta: z.record(z.string().min(1).max(255), metaValue).optional(),
    availability_zone: z.string().min(1).max(255).optional(),
    project_id: z.string().min(1).max(255).optional(),
    instance_type: z.string().min(1).max(255).optional().describe('flavor name (EC2 instance-type); default m1.small'),
    image_id: z.string().min(1).max(255).optional().describe('image id; EC2 ami-id derives from it'),
    public_ipv4: ipv4Schema.optional().describe('floating address (EC2 public-ipv4)'),
    root_device_name: z
      .string()
      .regex(/^\/dev\/[a-z][a-z0-9]{1,15}$/, 'must look like /dev/vda')
      .optional()
      .describe('EC2 block-device-mapping; default /dev/vda'),
    security_groups: z.array(z.string().min(1).max(255)).max(64).optional().describe("default ['default']"),
    vendor_data: vendorDataSchema.optional().describe("merged over the network's vendor_data"),
    http_tokens: z
      .enum(['optional', 'required'], "must be 'optional' or 'required'")
      .optional()
      .describe('required: the EC2 tree answers 401 without a session token (default optional)'),
    http_endpoint: z
      .enum(['enabled', 'disabled'], "must be 'enabled' or 'disabled'")
      .optional()
      .describe('disabled: every metadata request of the VM is refused with 403 (default enabled)'),
    http_hop_limit: z
      .number()
      .int('must be an integer')
      .min(1, 'must be 1..64')
      .max(64, 'must be 1..64')
      .optional()
      .describe('IP TTL of the token response (default 1: a container behind NAT in the guest cannot get a token)'),
  })
  .strict();

export type NetworkInput = z.input<typeof networkSchema>;
export type Network = z.output<typeof networkSchema>;
export type VmInput = z.input<typeof vmSchema>;
export type Vm = z.output<typeof vmSchema>;
