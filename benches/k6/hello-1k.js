// k6: /hello at a constant 1,000 req/s for 60 s (see hello.js for the checks and the env).
//   k6 run benches/k6/hello-1k.js
import { options as base, versions } from './hello.js';
export { default } from './hello.js';
export { versions };

export const options = {
  ...base,
  scenarios: { hello: { ...base.scenarios.hello, rate: 1000, preAllocatedVUs: 100, maxVUs: 400 } },
};
