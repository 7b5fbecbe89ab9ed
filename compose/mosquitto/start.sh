#!/bin/sh
# Writes the password file and ACL from the platform's settings, then runs Mosquitto.
set -eu
data=/mosquitto/data
: > "$data/passwd"
mosquitto_passwd -b "$data/passwd" "$FLEET_MQTT_USERNAME" "$FLEET_MQTT_PASSWORD"
mosquitto_passwd -b "$data/passwd" "$FLEET_MQTT_GATEWAY_USERNAME" "$FLEET_MQTT_GATEWAY_PASSWORD"
sed -e "s/{bridge}/$FLEET_MQTT_USERNAME/" -e "s/{gateway}/$FLEET_MQTT_GATEWAY_USERNAME/" \
    /mosquitto/config/acl.template > "$data/acl"
chown -R mosquitto:mosquitto "$data"
exec mosquitto -c /mosquitto/config/mosquitto.conf
