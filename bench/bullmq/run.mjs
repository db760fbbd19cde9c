// BullMQ on the same machine and Redis as `just bench`: the baseline of the end-to-end ratio.
//
//   node bench/bullmq/run.mjs [jobs]        (REDIS_URL, default redis://127.0.0.1:6379)
//
// Two phases, each on a queue of its own: `jobs` jobs added one `add` at a time by 64
// concurrent producers (as the grid's bench submits one task per request, 64 at a time), then
// the same count in `addBulk` calls of 100 (8 at a time). A worker in a second process
// (concurrency 64) completes each job at once with the SHA-256 of its data, as the simulated
// fleet answers each task (`--instant-results`). A phase lasts from its first add to its last
// completion. BullMQ keeps its jobs in Redis only (the grid's Redis keeps nothing on disk): no
// job is durable, where each of the grid's tasks is committed to PostgreSQL.
//
// Prints one JSON object on stdout: jobs/s, and the CPU per job of the producer, the worker
// and Redis (the shared server's `INFO cpu`, so run nothing else beside it). Every key it
// writes is under its own prefix (`bench-bullmq-<pid>`), removed at the end.
import { fork } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const PRODUCERS = 64;
const BULK = 100;
const BULK_PRODUCERS = 8;
const CONCURRENCY = Number(process.env.BULLMQ_CONCURRENCY || 64);

const url = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const connection = () => new IORedis(url, { maxRetriesPerRequest: null });

if (process.argv[2] === '--worker') {
  await work(process.argv[3], process.argv[4], Number(process.argv[5]));
} else {
  await main(Number(process.argv[2] || 20000));
}

// A task's data, the shape and size of the grid bench's `thermal_task`.
function task(index) {
  return {
    copropriete_id: randomUUID(),
    priority: 5,
    deadline: new Date(Date.now() + 2 * 3600 * 1000).toISOString(),
    kind: {
      type: 'building_thermal_simulation',
      building_id: randomUUID(),
      insulation_score: (index % 100) / 100,
      surface_m2: 60 + (index % 90),
      heating_degree_days: 2400,
    },
  };
}

function cpuSeconds(usage) {
  return (usage.user + usage.system) / 1e6;
}

async function redisCpuSeconds(redis) {
  const info = await redis.info('cpu');
  const field = (name) => Number(info.match(new RegExp(`^${name}:([0-9.]+)`, 'm'))[1]);
  return field('used_cpu_sys') + field('used_cpu_user');
}

// The worker process: completes each job at once, and says when it has completed `jobs`.
async function work(name, prefix, jobs) {
  let completed = 0;
  let started = null;
  const worker = new Worker(
    name,
    async (job) => createHash('sha256').update(JSON.stringify(job.data)).digest('hex'),
    { connection: connection(), prefix, concurrency: CONCURRENCY },
  );
  worker.on('completed', () => {
    completed += 1;
    if (completed === jobs) {
      process.send({ done: true, cpu: cpuSeconds(process.cpuUsage(started)) });
    }
  });
  worker.on('error', (error) => console.error(`bullmq worker: ${error.message}`));
  await worker.waitUntilReady();
  started = process.cpuUsage();
  process.send({ ready: true });
  process.on('message', async (message) => {
    if (message.stop) {
      await worker.close();
      process.exit(0);
    }
  });
}

async function phase(name, prefix, jobs, bulk, redis) {
  const queueConnection = connection();
  const queue = new Queue(name, { connection: queueConnection, prefix });
  await queue.waitUntilReady();
  const child = fork(new URL(import.meta.url).pathname, ['--worker', name, prefix, String(jobs)]);
  const messages = [];
  let wake = null;
  child.on('message', (message) => {
    messages.push(message);
    if (wake) wake();
  });
  const next = async () => {
    while (messages.length === 0) await new Promise((resolve) => (wake = resolve));
    return messages.shift();
  };
  await next(); // ready
  const redisBefore = await redisCpuSeconds(redis);
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  let index = 0;
  const producers = [];
  for (let producer = 0; producer < (bulk ? BULK_PRODUCERS : PRODUCERS); producer++) {
    producers.push(
      (async () => {
        while (index < jobs) {
          if (bulk) {
            const from = index;
            index = Math.min(jobs, index + BULK);
            const batch = [];
            for (let i = from; i < index; i++) batch.push({ name: 'task', data: task(i) });
            await queue.addBulk(batch);
          } else {
            const i = index++;
            await queue.add('task', task(i));
          }
        }
      })(),
    );
  }
  await Promise.all(producers);
  const producerCpu = cpuSeconds(process.cpuUsage(cpuBefore));
  const done = await next();
  const seconds = (performance.now() - started) / 1000;
  const redisCpu = (await redisCpuSeconds(redis)) - redisBefore;
  child.send({ stop: true });
  await new Promise((resolve) => child.on('exit', resolve));
  await queue.obliterate({ force: true });
  await queue.close();
  queueConnection.disconnect();
  const perJob = (value) => (value / jobs) * 1e6;
  return {
    jobs,
    seconds,
    jobs_per_second: jobs / seconds,
    cpu_us_per_job: {
      producer: perJob(producerCpu),
      worker: perJob(done.cpu),
      redis: perJob(redisCpu),
      total: perJob(producerCpu + done.cpu + redisCpu),
    },
  };
}

async function main(jobs) {
  const version = JSON.parse(readFileSync(new URL('node_modules/bullmq/package.json', import.meta.url))).version;
  const prefix = `bench-bullmq-${process.pid}`;
  const redis = connection();
  try {
    console.error(`bullmq ${version}: ${jobs} jobs, one add per job, ${PRODUCERS} producers`);
    const one = await phase('one', prefix, jobs, false, redis);
    console.error(`bullmq: ${one.jobs_per_second.toFixed(0)} jobs/s`);
    console.error(`bullmq: ${jobs} jobs in addBulk of ${BULK}, ${BULK_PRODUCERS} producers`);
    const bulk = await phase('bulk', prefix, jobs, true, redis);
    console.error(`bullmq: ${bulk.jobs_per_second.toFixed(0)} jobs/s`);
    console.log(
      JSON.stringify({
        version,
        node: process.version,
        worker_concurrency: CONCURRENCY,
        one_add_per_job: { producers: PRODUCERS, ...one },
        add_bulk_of_100: { producers: BULK_PRODUCERS, ...bulk },
      }),
    );
  } finally {
    // Whatever obliterate left (a phase that failed half way).
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
      if (keys.length > 0) await redis.del(...keys);
      cursor = next;
    } while (cursor !== '0');
    redis.disconnect();
  }
}
