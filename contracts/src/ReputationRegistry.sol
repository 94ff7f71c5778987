// SPDX-License-Identifier: MIT
pragma solidity ^0.8.26;

import {AgentRegistry} from "./AgentRegistry.sol";
import {Marketplace} from "./Marketplace.sol";
import {PaymentChannels} from "./PaymentChannels.sol";

/// @title ReputationRegistry — feedback grounded in payment
/// @notice ERC-8004-style feedback (value with decimals, two tags, a URI and its hash) about an
/// asset or an agent, accepted only from an account that paid for it: a license bought, or a
/// channel of that account with a claim above zero. At most one feedback per paying account and
/// subject. This answers the Sybil complaint against open feedback: every rating cost its author.
/// @dev An agent is paid for through an asset its owner or its wallet published.
contract ReputationRegistry {
    /// @notice What feedback is about.
    enum SubjectKind {
        Asset,
        Agent
    }

    /// @notice The feedback and the payment that entitles its author to give it.
    struct FeedbackInput {
        SubjectKind subjectKind;
        uint256 subjectId;
        int128 value;
        uint8 valueDecimals;
        string tag1;
        string tag2;
        string feedbackURI;
        bytes32 feedbackHash;
        /// The asset paid for (for an asset subject: the subject itself).
        uint256 paidAssetId;
        /// 0 to prove payment by license, else a channel of the author for paidAssetId.
        uint256 channelId;
    }

    /// @notice Running totals per subject; values are normalised to 18 decimals.
    struct Summary {
        uint64 count;
        int192 sum;
    }

    // ---------------------------------------------------------------- errors

    /// @notice `account` has not paid for the asset it cites.
    error NotAPayer(uint256 paidAssetId, address account);
    /// @notice The cited asset does not belong to the agent being rated.
    error AssetNotOfAgent(uint256 paidAssetId, uint256 agentId);
    /// @notice For an asset subject, the paid asset must be the subject.
    error PaymentForOtherAsset(uint256 subjectId, uint256 paidAssetId);
    /// @notice `account` already rated this subject.
    error AlreadyRated(SubjectKind subjectKind, uint256 subjectId, address account);
    /// @notice Owners do not rate what they sell.
    error SelfFeedback(address account);
    /// @notice At most MAX_DECIMALS value decimals.
    error InvalidValueDecimals(uint8 valueDecimals, uint8 maxDecimals);

    // ---------------------------------------------------------------- events

    /// @notice New feedback (fields as ERC-8004's NewFeedback, plus the subject kind).
    event NewFeedback(
        SubjectKind indexed subjectKind,
        uint256 indexed subjectId,
        address indexed clientAddress,
        int128 value,
        uint8 valueDecimals,
        string tag1,
        string tag2,
        string feedbackURI,
        bytes32 feedbackHash
    );

    // ---------------------------------------------------------------- storage

    /// @notice Summaries are returned with this many decimals.
    uint8 public constant MAX_DECIMALS = 18;

    /// @notice Where assets and licenses live.
    Marketplace public immutable marketplace;
    /// @notice Where channels live.
    PaymentChannels public immutable channels;
    /// @notice Where agents live.
    AgentRegistry public immutable agents;
    /// @notice Whether an account already rated a subject.
    mapping(SubjectKind subjectKind => mapping(uint256 subjectId => mapping(address account => bool done))) public
        hasRated;
    /// @dev Totals per subject.
    mapping(SubjectKind subjectKind => mapping(uint256 subjectId => Summary)) private _summaries;

    // ---------------------------------------------------------------- constructor

    constructor(Marketplace marketplace_, PaymentChannels channels_, AgentRegistry agents_) {
        marketplace = marketplace_;
        channels = channels_;
        agents = agents_;
    }

    // ---------------------------------------------------------------- external

    /// @notice Records feedback from the caller, who must have paid for the subject.
    function giveFeedback(FeedbackInput calldata input) external {
        if (input.valueDecimals > MAX_DECIMALS) revert InvalidValueDecimals(input.valueDecimals, MAX_DECIMALS);
        address seller = marketplace.ownerOf(input.paidAssetId);
        if (input.subjectKind == SubjectKind.Asset) {
            if (input.subjectId != input.paidAssetId) revert PaymentForOtherAsset(input.subjectId, input.paidAssetId);
            if (seller == msg.sender) revert SelfFeedback(msg.sender);
        } else {
            address agentOwner = agents.ownerOf(input.subjectId);
            if (seller != agentOwner && seller != agents.getAgentWallet(input.subjectId)) {
                revert AssetNotOfAgent(input.paidAssetId, input.subjectId);
            }
            if (msg.sender == agentOwner) revert SelfFeedback(msg.sender);
        }
        if (!_hasPaid(input.paidAssetId, input.channelId, msg.sender)) revert NotAPayer(input.paidAssetId, msg.sender);
        if (hasRated[input.subjectKind][input.subjectId][msg.sender]) {
            revert AlreadyRated(input.subjectKind, input.subjectId, msg.sender);
        }
        hasRated[input.subjectKind][input.subjectId][msg.sender] = true;

        Summary storage summary = _summaries[input.subjectKind][input.subjectId];
        summary.count += 1;
        summary.sum += int192(input.value) * int192(uint192(10 ** (MAX_DECIMALS - input.valueDecimals)));
        emit NewFeedback(
            input.subjectKind,
            input.subjectId,
            msg.sender,
            input.value,
            input.valueDecimals,
            input.tag1,
            input.tag2,
            input.feedbackURI,
            input.feedbackHash
        );
    }

    // ---------------------------------------------------------------- views

    /// @notice Number of feedbacks and their average value (with `decimals` decimals).
    function getSummary(SubjectKind subjectKind, uint256 subjectId)
        external
        view
        returns (uint64 count, int256 averageValue, uint8 decimals)
    {
        Summary memory summary = _summaries[subjectKind][subjectId];
        count = summary.count;
        averageValue = count == 0 ? int256(0) : int256(summary.sum) / int256(uint256(count));
        decimals = MAX_DECIMALS;
    }

    // ---------------------------------------------------------------- internal

    function _hasPaid(uint256 assetId, uint256 channelId, address account) internal view returns (bool) {
        if (channelId == 0) return marketplace.licenseExpiry(assetId, account) > 0;
        PaymentChannels.Channel memory channel = channels.getChannel(channelId);
        return channel.payer == account && channel.assetId == assetId && channel.claimed > 0;
    }
}
