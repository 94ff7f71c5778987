// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";

import {ITokenTransferReceiver} from "./ITokenTransferReceiver.sol";

/// @title ReentrantPayee — an attacker contract that is paid and re-enters (test-only)
/// @notice It can be a vault payee or a channel payer (its owner makes it call anything through
/// `execute`: approve, open a channel, buy). When a hook-bearing token (MaliciousToken) pays it
/// and calls `onTokenTransfer`, it fires the call its owner armed — e.g. `release` to itself
/// again, `reclaim` or `claim` — while the paying contract's call is still on the stack, and
/// records whether that call succeeded and what it returned, without bubbling a failure, so the
/// payment it received completes and the test can show the re-entry got nothing.
/// @dev One shot per arming: the arming is cleared before the call, so a re-entry that pays the
/// payee again cannot recurse.
contract ReentrantPayee is ITokenTransferReceiver {
    // ---------------------------------------------------------------- errors

    /// @notice Only the owner may arm the payee or make it call out.
    error NotOwner(address caller);
    /// @notice Re-entry needs a target contract.
    error ZeroTarget();

    // ---------------------------------------------------------------- events

    /// @notice The next payment will make the payee call `target` with `data`.
    event Armed(address indexed target, bytes data);
    /// @notice `amount` of `token` arrived from `from` (the token said so).
    event PaymentNotified(address indexed token, address indexed from, uint256 amount);
    /// @notice The armed call to `target` ran; `succeeded` false means it reverted with `returnData`.
    event ReentryAttempted(address indexed target, bool succeeded, bytes returnData);

    // ---------------------------------------------------------------- storage

    /// @notice The attacker account that controls this contract.
    address public immutable owner;
    /// @notice Contract the next payment makes the payee call (zero = disarmed).
    address public reentryTarget;
    /// @notice Calldata of that call.
    bytes public reentryData;
    /// @notice Whether the last re-entrant call succeeded.
    bool public lastReentrySucceeded;
    /// @notice What the last re-entrant call returned, or its revert data when it failed.
    bytes public lastReentryData;
    /// @notice How many re-entrant calls were made so far.
    uint256 public reentryCount;
    /// @notice How many payment notifications arrived so far.
    uint256 public notificationCount;

    // ---------------------------------------------------------------- constructor

    constructor() {
        owner = msg.sender;
    }

    // ---------------------------------------------------------------- external

    /// @notice Makes the next payment notification call `target` with `data`.
    function arm(address target, bytes calldata data) external {
        _onlyOwner();
        if (target == address(0)) revert ZeroTarget();
        reentryTarget = target;
        reentryData = data;
        emit Armed(target, data);
    }

    /// @notice Calls `target` with `data` as this contract; a revert bubbles up unchanged.
    function execute(address target, bytes calldata data) external returns (bytes memory) {
        _onlyOwner();
        return Address.functionCall(target, data);
    }

    /// @inheritdoc ITokenTransferReceiver
    /// @dev Anyone may call it; it only fires what the owner armed.
    function onTokenTransfer(address from, uint256 amount) external {
        ++notificationCount;
        emit PaymentNotified(msg.sender, from, amount);
        address target = reentryTarget;
        if (target == address(0)) return;
        bytes memory data = reentryData;
        delete reentryTarget;
        delete reentryData;
        (bool succeeded, bytes memory returnData) = target.call(data);
        lastReentrySucceeded = succeeded;
        lastReentryData = returnData;
        ++reentryCount;
        emit ReentryAttempted(target, succeeded, returnData);
    }

    // ---------------------------------------------------------------- internal

    function _onlyOwner() internal view {
        if (msg.sender != owner) revert NotOwner(msg.sender);
    }
}
