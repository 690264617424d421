"""The endpoint benchmark's function (run by awslambdaric): publishes `n` messages one at
a time, each waited for, either through the hub with boto3 (IoT Data `Publish`) or
straight to the broker with paho-mqtt (QoS 1, waiting for the PUBACK), from this same
process, and says how long they took."""
import json
import os
import time

import boto3
import paho.mqtt.client as mqtt

_iot = None
_mqtt = None


def _iot_client():
    global _iot
    if _iot is None:
        _iot = boto3.client("iot-data")
    return _iot


def _mqtt_client(port):
    global _mqtt
    if _mqtt is None:
        _mqtt = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
        _mqtt.connect("127.0.0.1", port)
        _mqtt.loop_start()
    return _mqtt


def handle(event, context):
    n = event["n"]
    payload = json.dumps({"device": "dev-1", "temperature": 21.5}).encode()
    if event["mode"] == "boto3":
        client = _iot_client()
        start = time.perf_counter_ns()
        for _ in range(n):
            client.publish(topic="bench/readings", qos=1, payload=payload)
    else:
        client = _mqtt_client(event["port"])
        start = time.perf_counter_ns()
        for _ in range(n):
            client.publish("bench/readings", payload, qos=1).wait_for_publish()
    return {"ns": time.perf_counter_ns() - start}
