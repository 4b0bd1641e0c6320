package rooms

// checkPowerLevels applies v10 rule 9 / v12 rule 10 to an
// m.room.power_levels event whose sender already passed rules 5 to 8.
func (c *authCheck) checkPowerLevels() *AuthError {
	ev := c.ev
	content := ev.Content()
	// v10 9.1-9.3 / v12 10.1-10.3: integer values, user-ID keys.
	if reason := checkPowerLevelsContent(content); reason != "" {
		return reject(ev, "power_levels", "%s", reason)
	}
	newUsers, _ := content["users"].(map[string]any)
	// v12 10.4: creators cannot be listed in users.
	for _, u := range sortedKeys(newUsers) {
		if c.pl.isCreator(u) {
			return reject(ev, "power_levels", "users lists %s, a room creator, whose power cannot be set", u)
		}
	}
	// v10 9.4 / v12 10.5: the room's first power-levels event.
	old := c.state[StateTuple{typePowerLevels, ""}]
	if old == nil {
		return nil
	}
	oldContent := old.Content()
	sender := c.pl.user(ev.Sender())
	above := func(n int64) bool { return sender.less(finite(n)) }
	// v10 9.5 / v12 10.6: top-level levels added, changed or removed.
	for _, key := range powerLevelIntegerKeys {
		oldN, hadOld := oldContent[key].(int64)
		newN, hasNew := content[key].(int64)
		if hadOld == hasNew && oldN == newN {
			continue
		}
		if hadOld && above(oldN) {
			return reject(ev, "power_levels", "%s: the current value %d is above the sender's power level %s", key, oldN, sender)
		}
		if hasNew && above(newN) {
			return reject(ev, "power_levels", "%s: the new value %d is above the sender's power level %s", key, newN, sender)
		}
	}
	for _, key := range []string{"events", "notifications"} {
		oldMap, _ := oldContent[key].(map[string]any)
		newMap, _ := content[key].(map[string]any)
		// v10 9.6 / v12 10.7: entries changed or removed.
		for _, k := range sortedKeys(oldMap) {
			oldN, _ := oldMap[k].(int64)
			newN, hasNew := newMap[k].(int64)
			if hasNew && newN == oldN {
				continue
			}
			if above(oldN) {
				return reject(ev, "power_levels", "%s[%q]: the current value %d is above the sender's power level %s", key, k, oldN, sender)
			}
		}
		// v10 9.7 / v12 10.8: entries added or changed.
		for _, k := range sortedKeys(newMap) {
			newN, _ := newMap[k].(int64)
			oldN, hadOld := oldMap[k].(int64)
			if hadOld && newN == oldN {
				continue
			}
			if above(newN) {
				return reject(ev, "power_levels", "%s[%q]: the new value %d is above the sender's power level %s", key, k, newN, sender)
			}
		}
	}
	oldUsers, _ := oldContent["users"].(map[string]any)
	// v10 9.8 / v12 10.9: users changed or removed, other than the
	// sender's own entry: the current value must be below the sender's.
	for _, u := range sortedKeys(oldUsers) {
		if u == ev.Sender() {
			continue
		}
		oldN, _ := oldUsers[u].(int64)
		newN, hasNew := newUsers[u].(int64)
		if hasNew && newN == oldN {
			continue
		}
		if !finite(oldN).less(sender) {
			return reject(ev, "power_levels", "users[%q]: the current value %d is not below the sender's power level %s", u, oldN, sender)
		}
	}
	// v10 9.9 / v12 10.10: users added or changed: the new value must not
	// exceed the sender's.
	for _, u := range sortedKeys(newUsers) {
		newN, _ := newUsers[u].(int64)
		oldN, hadOld := oldUsers[u].(int64)
		if hadOld && newN == oldN {
			continue
		}
		if above(newN) {
			return reject(ev, "power_levels", "users[%q]: the new value %d is above the sender's power level %s", u, newN, sender)
		}
	}
	// v10 9.10 / v12 10.11: otherwise, allow.
	return nil
}
