#!/usr/bin/env python3
"""Herald's AWS shape on one machine, all on 127.0.0.1: the emulator (moto) with Herald's table and
queues, and the two Lambda functions under `cargo lambda watch`.

    .venv/bin/python scripts/local_aws.py up      # moto on port 5000 (HERALD_LOCAL_AWS_PORT moves
                                                  # it), the table and queues, target/local-aws.env,
                                                  # then ingest watched on port 9000 and send on
                                                  # 9001 (logs in target/local-aws-*.log)
    .venv/bin/python scripts/local_aws.py pump    # act as the SQS event source mapping once:
                                                  # receive up to 10 jobs, invoke `send`, delete
                                                  # the ones it did not report as failed
    .venv/bin/python scripts/local_aws.py down    # stop the watchers and the emulator
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target")
ENV_FILE = os.path.join(TARGET, "local-aws.env")
PID_FILE = os.path.join(TARGET, "local-aws.pid")
PORT = int(os.environ.get("HERALD_LOCAL_AWS_PORT", "5000"))
ENDPOINT = f"http://127.0.0.1:{PORT}"
TABLE = "herald"
SCHEDULE_GROUP = "herald-jobs"
REGION = "us-east-1"
# The template's MaxReceiveCount default, so the functions and the queue agree as they do on AWS.
MAX_RECEIVE_COUNT = 8
WATCHERS = {"ingest": 9000, "send": 9001}
# What each recorded process runs, so a PID the system has since reused is never signalled.
COMMANDS = {"moto": b"moto_server", "ingest": b"lambda\0watch", "send": b"lambda\0watch"}


def client(name, endpoint=ENDPOINT):
    return boto3.client(name, endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id="test", aws_secret_access_key="test")


def recorded():
    """The processes `up` started, by name, or {} when there is no readable PID file."""
    try:
        pids = json.load(open(PID_FILE))
    except (OSError, ValueError):
        return {}
    # An older `up` wrote moto's PID alone.
    return {"moto": pids} if isinstance(pids, int) else pids


def alive(name, pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return COMMANDS[name] in f.read()
    except (OSError, IndexError, KeyError):
        return False


def record(pids):
    with open(PID_FILE, "w") as f:
        json.dump(pids, f)


def port_free(port):
    with socket.socket() as s:
        # As the servers do, so connections of a process just stopped (TIME_WAIT) do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def start(argv, log_name, **kwargs):
    log = open(os.path.join(TARGET, log_name), "w")
    # A session of its own, so `down` stops the process with everything it started.
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, cwd=ROOT, **kwargs)


def start_emulator():
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = start([moto, "-H", "127.0.0.1", "-p", str(PORT)], "local-aws.log")
    record({"moto": proc.pid})
    for _ in range(150):
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(f"{ENDPOINT}/moto-api/")
            return
        except OSError:
            time.sleep(0.1)
    down(quiet=True)
    sys.exit("the emulator did not start; see target/local-aws.log")


def create_resources():
    ddb = client("dynamodb")
    ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                {"AttributeName": "sk", "KeyType": "RANGE"}])
    sqs = client("sqs")
    dlq = sqs.create_queue(QueueName="herald-jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
    queue = sqs.create_queue(QueueName="herald-jobs", Attributes={
        "VisibilityTimeout": "180", "RedrivePolicy": json.dumps(redrive)})["QueueUrl"]
    # Jobs due more than 15 minutes ahead wait as schedules in this group (the emulator keeps
    # them but never fires them).
    client("scheduler").create_schedule_group(Name=SCHEDULE_GROUP)
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return queue, queue_arn, dlq_arn


def write_env(queue, queue_arn, dlq_arn):
    # AWS_DEFAULT_REGION too: boto3 and the aws CLI read only that one.
    env = {
        "AWS_ENDPOINT_URL": ENDPOINT, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, "TABLE_NAME": TABLE, "QUEUE_URL": queue,
        "MAX_RECEIVE_COUNT": str(MAX_RECEIVE_COUNT), "EVENTS_TENANT": "demo",
        "SCHEDULE_GROUP": SCHEDULE_GROUP, "QUEUE_ARN": queue_arn, "DEAD_LETTER_QUEUE_ARN": dlq_arn,
        "SCHEDULER_ROLE_ARN": "arn:aws:iam::123456789012:role/herald-scheduler",
    }
    with open(ENV_FILE, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in env.items())


def start_watchers(pids):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    for name, port in WATCHERS.items():
        argv = ["cargo", "lambda", "watch", "-p", name, "-A", "127.0.0.1", "-P", str(port),
                "--env-file", os.path.relpath(ENV_FILE, ROOT)]
        pids[name] = start(argv, f"local-aws-{name}.log", env=env).pid
        record(pids)
        print(f"{name}: {' '.join(argv)}  (log: target/local-aws-{name}.log)")


def up():
    os.makedirs(TARGET, exist_ok=True)
    running = {name for name, pid in recorded().items() if alive(name, pid)}
    if running == {"moto", *WATCHERS}:
        print(f"already up: emulator on {ENDPOINT}; environment in {os.path.relpath(ENV_FILE, ROOT)}")
        return
    if running:
        sys.exit(f"partly up ({', '.join(sorted(running))} running): run `local_aws.py down` first")
    busy = [p for p in [PORT, *WATCHERS.values()] if not port_free(p)]
    if busy:
        sys.exit(f"127.0.0.1 port(s) {busy} in use; set HERALD_LOCAL_AWS_PORT to move the emulator, "
                 "stop whatever holds 9000/9001")
    start_emulator()
    queue, queue_arn, dlq_arn = create_resources()
    write_env(queue, queue_arn, dlq_arn)
    print(f"emulator on {ENDPOINT}; table {TABLE}; queue {queue}")
    start_watchers(recorded())
    print("each function compiles on its first invoke (about 2.5 min the first time on 2 cores)")
    print(f"environment written to {ENV_FILE}: run `set -a; . {os.path.relpath(ENV_FILE, ROOT)}; set +a`")


def pump():
    env = dict(line.strip().split("=", 1) for line in open(ENV_FILE))
    sqs = client("sqs", env["AWS_ENDPOINT_URL"])
    queue = env["QUEUE_URL"]
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10,
                                   MessageSystemAttributeNames=["All"]).get("Messages", [])
    if not messages:
        print("no jobs waiting")
        return
    event = {"Records": [{
        "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
        "attributes": m.get("Attributes", {}), "messageAttributes": {}, "eventSource": "aws:sqs",
        "awsRegion": REGION} for m in messages]}
    port = str(WATCHERS["send"])
    print(f"invoking send on 127.0.0.1:{port} with {len(messages)} job(s) (a first invoke waits for its build)")
    out = subprocess.run(["cargo", "lambda", "invoke", "send", "--invoke-address", "127.0.0.1",
                          "--invoke-port", port, "--data-ascii", json.dumps(event)],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"invoking send failed (is `local_aws.py up` running? see target/local-aws-send.log):\n{out.stderr}")
    failed = {f["itemIdentifier"] for f in json.loads(out.stdout).get("batchItemFailures", [])}
    for m in messages:
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    print(f"delivered {len(messages) - len(failed)} job(s); {len(failed)} will come back")


def stop(pid):
    try:
        os.killpg(pid, signal.SIGTERM)
    except OSError:
        return
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except OSError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


def down(quiet=False):
    pids = recorded()
    stopped = []
    # The watchers first: a function stopped after the emulator would log connection errors.
    for name in [*WATCHERS, "moto"]:
        if name in pids and alive(name, pids[name]):
            stop(pids[name])
            stopped.append("emulator" if name == "moto" else f"{name} watcher")
    if os.path.exists(PID_FILE):
        os.remove(PID_FILE)
    if not quiet:
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


if __name__ == "__main__":
    {"up": up, "pump": pump, "down": down}.get(sys.argv[1] if len(sys.argv) > 1 else "", lambda: sys.exit(__doc__))()
