#!/usr/bin/env python3
"""Herald's AWS shape on one machine: the emulator (moto) with Herald's table and queues, for
running the Lambda functions under `cargo lambda watch`.

    .venv/bin/python scripts/local_aws.py up      # start moto on 127.0.0.1:5000, create resources,
                                                  # write target/local-aws.env
    .venv/bin/python scripts/local_aws.py pump    # act as the SQS event source mapping once:
                                                  # receive up to 10 jobs, invoke `send` (watched
                                                  # on port 9001), delete the ones it did not
                                                  # report as failed
    .venv/bin/python scripts/local_aws.py down    # stop the emulator
"""
import json
import os
import subprocess
import sys
import time
import urllib.request

import boto3

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV_FILE = os.path.join(ROOT, "target", "local-aws.env")
PID_FILE = os.path.join(ROOT, "target", "local-aws.pid")
PORT = int(os.environ.get("HERALD_LOCAL_AWS_PORT", "5000"))
ENDPOINT = f"http://127.0.0.1:{PORT}"
TABLE = "herald"


def client(name, endpoint=ENDPOINT):
    return boto3.client(name, endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def up():
    os.makedirs(os.path.dirname(ENV_FILE), exist_ok=True)
    log = open(os.path.join(ROOT, "target", "local-aws.log"), "w")
    moto = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(PORT)], stdout=log, stderr=log)
    open(PID_FILE, "w").write(str(proc.pid))
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{ENDPOINT}/moto-api/")
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit("the emulator did not start; see target/local-aws.log")
    ddb = client("dynamodb")
    ddb.create_table(TableName=TABLE, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                {"AttributeName": "sk", "KeyType": "RANGE"}])
    sqs = client("sqs")
    dlq = sqs.create_queue(QueueName="herald-jobs-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName="herald-jobs", Attributes={
        "VisibilityTimeout": "180",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 8}),
    })["QueueUrl"]
    env = {
        "AWS_ENDPOINT_URL": ENDPOINT, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1", "TABLE_NAME": TABLE, "QUEUE_URL": queue, "EVENTS_TENANT": "demo",
    }
    with open(ENV_FILE, "w") as f:
        f.writelines(f"{k}={v}\n" for k, v in env.items())
    print(f"emulator on {ENDPOINT}; table {TABLE}; queue {queue}")
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
        "awsRegion": "us-east-1"} for m in messages]}
    port = os.environ.get("HERALD_SEND_INVOKE_PORT", "9001")
    out = subprocess.run(["cargo", "lambda", "invoke", "send", "--invoke-port", port, "--data-ascii", json.dumps(event)],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    failed = {f["itemIdentifier"] for f in json.loads(out).get("batchItemFailures", [])}
    for m in messages:
        if m["MessageId"] not in failed:
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
    print(f"delivered {len(messages) - len(failed)} job(s); {len(failed)} will come back")


def down():
    try:
        os.kill(int(open(PID_FILE).read()), 15)
        os.remove(PID_FILE)
        print("emulator stopped")
    except (OSError, ValueError):
        print("no emulator was running")


if __name__ == "__main__":
    {"up": up, "pump": pump, "down": down}.get(sys.argv[1] if len(sys.argv) > 1 else "", lambda: sys.exit(__doc__))()
