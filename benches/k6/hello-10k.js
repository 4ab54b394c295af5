// k6: /hello at a constant 10,000 req/s for 60 s (see hello.js for the checks and the env).
// One k6 instance needs a few cores for this rate; run it from another machine than the proxy.
//   k6 run benches/k6/hello-10k.js
import { options as base, versions } from './hello.js';
export { default } from './hello.js';
export { versions };

export const options = {
  ...base,
  scenarios: { hello: { ...base.scenarios.hello, rate: 10000, preAllocatedVUs: 1000, maxVUs: 4000 } },
};
