import { z } from 'zod';
import { option } from '../cli/options.js';

// --tls-cert and --tls-key, shared by `outpost coordinator` and `outpost relay` (both serve the
// same endpoint): spread into each command's options, with the rule that they come together.
export const tlsOptionsShape = {
  tlsCert: option(z.string().min(1).optional(), {
    placeholder: 'FILE',
    description: 'serve wss:// and https:// with this PEM certificate (needs --tls-key)',
  }),
  tlsKey: option(z.string().min(1).optional(), {
    placeholder: 'FILE',
    description: 'PEM private key for --tls-cert',
  }),
};

export const tlsPairComplete = (o: { tlsCert?: string | undefined; tlsKey?: string | undefined }): boolean =>
  (o.tlsCert === undefined) === (o.tlsKey === undefined);
export const TLS_PAIR_ISSUE = { message: 'give both --tls-cert and --tls-key, or neither', path: ['tlsCert'] };
