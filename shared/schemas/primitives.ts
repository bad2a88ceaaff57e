import { z } from 'zod';

export const hostIdSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9-]{0,62}$/,
    'host ids are 1-63 lowercase letters, digits or dashes, starting with a letter or digit',
  );
export type HostId = z.infer<typeof hostIdSchema>;

// Names of a policy's admins, roles, groups, relays, channels and logins.
export const policyNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'names are 1-64 letters, digits, dots, dashes or underscores');

// Nix store path: 32 nix-base32 characters, a dash, and a name (src/libstore/path.cc).
export const storePathSchema = z
  .string()
  .regex(
    /^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]{1,211}$/,
    'expected a Nix store path such as /nix/store/<32 chars>-nixos-system-…',
  );
export type StorePath = z.infer<typeof storePathSchema>;

export const base64Key32Schema = z
  .string()
  .regex(/^[A-Za-z0-9+/]{43}=$/, 'expected a base64 Ed25519 public key (44 characters)');
export const base64Sig64Schema = z
  .string()
  .regex(/^[A-Za-z0-9+/]{86}==$/, 'expected a base64 Ed25519 signature (88 characters)');

export const isoTimeSchema = z.iso.datetime({ offset: false });
export const generationSchema = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);
export const activationActionSchema = z.enum(['switch', 'boot', 'test']);
export type ActivationAction = z.infer<typeof activationActionSchema>;
